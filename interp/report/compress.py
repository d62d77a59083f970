"""The `interp compress` page: NIAH accuracy and perplexity vs KV memory, every cell, the summary.

One self-contained offline HTML file (plotly.js inline). Accuracy points carry 95% Wilson intervals
over the cell's trials (needles x depths); random draws are drawn one point each. The cells table has
everything `compress.json` measured per cell (KV bytes by policy and as stored, sampled peak RSS of one
prompt, prefill seconds, decode tokens/s).

    >>> doc = json.load(open("runs/compress/compress.json"))     # doctest: +SKIP
    >>> write_page(doc, "runs/compress/compress.html")           # doctest: +SKIP
"""

import html
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp.report.measured import wilson

_COLORS = {"retrieval": "#d62728", "duo": "#1f77b4", "sink": "#2ca02c", "random": "#7f7f7f",
           "full": "#000000"}
_SYMBOLS = ["circle", "square", "diamond", "x", "triangle-up"]
_CSS = ("body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1200px;color:#222}"
        "h1{font-size:22px}"
        "h2{font-size:18px;border-bottom:1px solid #ddd} .note{color:#666;font-size:13px}"
        "table{border-collapse:collapse;font-size:12px} td,th{padding:2px 6px;border-bottom:1px solid #eee}")


def cell_name(c: dict) -> str:
    """A cell's method, with the draw for random selections ("random2")."""
    return c["method"] + (str(c["draw"]) if c["method"] == "random" else "")


def _hits(c: dict) -> tuple[int, int]:
    return sum(bool(x) for x in c["recalled"]), len(c["recalled"])


def pareto_figure(doc: dict) -> go.Figure:
    """NIAH accuracy (95% Wilson bars) and perplexity against KV bytes / uncompressed, per method and
    context length."""
    cells = doc["cells"]
    lengths = sorted({c["length"] for c in cells})
    fig = make_subplots(rows=1, cols=2, subplot_titles=("NIAH accuracy", "held-out perplexity"))
    for length in lengths:
        for meth in sorted({c["method"] for c in cells}):
            rows = [c for c in cells if c["method"] == meth and c["length"] == length]
            if not rows:
                continue
            if meth not in ("random", "full"):  # every curve ends at the uncompressed model
                rows += [c for c in cells if c["method"] == "full" and c["length"] == length]
            rows.sort(key=lambda c: (c["kv_bytes"], c["draw"]))
            x = [c["kv_bytes"] / c["kv_bytes_full"] for c in rows]
            acc = [c["accuracy"] for c in rows]
            ci = [wilson(*_hits(c)) for c in rows]
            style = {"mode": "markers+lines" if meth != "random" else "markers",
                     "legendgroup": f"{meth}{length}",
                     "marker": {"color": _COLORS.get(meth), "symbol": _SYMBOLS[lengths.index(length) % 5]},
                     "text": [f"{cell_name(c)}, fraction {c['fraction']:g}, {length} tokens"
                              for c in rows]}
            fig.add_trace(go.Scatter(x=x, y=acc, name=f"{meth} @ {length}", **style, error_y={
                "type": "data", "symmetric": False, "array": [hi - a for a, (lo, hi) in zip(acc, ci)],
                "arrayminus": [a - lo for a, (lo, hi) in zip(acc, ci)], "thickness": 1}), row=1, col=1)
            fig.add_trace(go.Scatter(x=x, y=[c["perplexity"] for c in rows], name=f"{meth} @ {length}",
                                     showlegend=False, **style), row=1, col=2)
    fig.update_xaxes(title_text="KV bytes / uncompressed")
    fig.update_yaxes(title_text="accuracy", range=[-0.05, 1.05], row=1, col=1)
    fig.update_yaxes(title_text="perplexity", row=1, col=2)
    fig.update_layout(title=f"Head-level KV compression — {doc['model']}", template="plotly_white",
                      height=480)
    return fig


def cells_table(doc: dict) -> str:
    """Every cell as an HTML table row."""
    head = ("method", "fraction", "length", "NIAH (95% CI)", "ppl", "KV / full", "KV stored MB",
            "peak RSS MB", "prefill s", "decode tok/s")
    rows = []
    for c in doc["cells"]:
        k, n = _hits(c)
        lo, hi = wilson(k, n)
        rss = c.get("peak_rss_mb")
        vals = (cell_name(c), f"{c['fraction']:g}", c["length"],
                f"{k}/{n} = {k / n:.2f} [{lo:.2f}, {hi:.2f}]",
                f"{c['perplexity']:.2f}", f"{c['kv_bytes'] / c['kv_bytes_full']:.2f}",
                f"{c['stored_bytes'] / 2**20:.1f}", "" if rss is None else f"{rss:.0f}",
                f"{c['prefill_s']:.1f}", f"{c['decode_tok_s']:.1f}")
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in vals) + "</tr>")
    return ("<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def summary_html(doc: dict) -> str:
    """The smallest fraction within 95% of uncompressed, the retrieval - random gap, the overlap."""
    s = doc.get("summary", {})
    items = []
    for key, frac in sorted(s.get("smallest_fraction_95", {}).items()):
        meth, length = key.split("@")
        shown = "not reached by any compressed fraction tried" if frac is None else f"{frac:g}"
        items.append(f"<li>{html.escape(meth)} at {length} tokens: smallest full-head fraction with accuracy "
                     f"&ge; 95% of uncompressed: <b>{shown}</b></li>")
    for length, g in sorted(s.get("gap_at_0.25", {}).items()):
        lo, hi = g["ci95"]
        items.append(f"<li>{length} tokens, 25% full heads: retrieval &minus; random accuracy "
                     f"<b>{g['gap']:+.2f}</b> "
                     f"(95% bootstrap CI [{lo:+.2f}, {hi:+.2f}], trials {g['n'][0]} vs {g['n'][1]})</li>")
    for frac, j in sorted(doc.get("overlap", {}).items()):
        items.append(f"<li>retrieval and duo full KV heads at fraction {frac}: Jaccard overlap {j:.2f}</li>")
    return "<ul>" + "".join(items) + "</ul>"


def write_page(doc: dict, path: str | Path) -> None:
    """Write the plots, the summary and the cells table as one self-contained HTML file."""
    body = pareto_figure(doc).to_html(full_html=False, include_plotlyjs=True)
    config = html.escape(", ".join(f"{k}={v}" for k, v in sorted(doc.get("config", {}).items())))
    Path(path).write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>interp compress</title>"
        f"<style>{_CSS}</style></head><body><h1>KV-cache compression — {html.escape(doc['model'])}</h1>"
        f"<p class='note'>{config}</p>{body}<h2>Summary</h2>{summary_html(doc)}"
        f"<h2>Cells</h2>{cells_table(doc)}</body></html>", encoding="utf-8")
