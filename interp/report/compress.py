"""The `interp compress` page: NIAH accuracy vs KV memory (Pareto plot), offline plotly HTML."""

import html
from pathlib import Path

import plotly.graph_objects as go

_COLORS = {"retrieval": "#d62728", "duo": "#1f77b4", "sink": "#2ca02c", "random": "#7f7f7f",
           "full": "#000000"}


def pareto_figure(doc: dict) -> go.Figure:
    fig = go.Figure()
    for length in sorted({c["length"] for c in doc["cells"]}):
        for meth in sorted({c["method"] for c in doc["cells"]}):
            rows = sorted((c for c in doc["cells"] if c["method"] == meth and c["length"] == length),
                          key=lambda c: (c["kv_bytes"], c["draw"]))
            if not rows:
                continue
            fig.add_trace(go.Scatter(
                x=[c["kv_bytes"] / c["kv_bytes_full"] for c in rows], y=[c["accuracy"] for c in rows],
                mode="markers+lines" if meth != "random" else "markers", name=f"{meth} @ {length}",
                marker={"color": _COLORS.get(meth), "symbol": ["circle", "square", "diamond", "x"][
                    sorted({c["length"] for c in doc["cells"]}).index(length) % 4]},
                text=[f"fraction {c['fraction']:g}, ppl {c['perplexity']:.2f}" for c in rows]))
    fig.update_layout(title=f"NIAH accuracy vs KV memory — {doc['model']}",
                      xaxis_title="KV bytes / uncompressed", yaxis_title="NIAH accuracy",
                      template="plotly_white")
    return fig


def write_page(doc: dict, path: str | Path) -> None:
    """Write the Pareto plot and the summary as one self-contained HTML file."""
    fig = pareto_figure(doc)
    body = fig.to_html(full_html=False, include_plotlyjs=True)
    summary = html.escape(str(doc.get("summary", {})))
    overlap = html.escape(str(doc.get("overlap", {})))
    Path(path).write_text("<!doctype html><html><head><meta charset='utf-8'><title>interp compress</title>"
                          f"</head><body>{body}<h3>Summary</h3><pre>{summary}</pre>"
                          "<h3>Retrieval vs duo overlap (Jaccard of full KV heads)</h3>"
                          f"<pre>{overlap}</pre></body></html>")
