"""Plotly figures of a scan: a layer x head heatmap per analysis, a pattern per drill-down head.

    >>> from interp.scan import load_scan                                       # doctest: +SKIP
    >>> doc = load_scan("runs/smollm2")                                         # doctest: +SKIP
    >>> heatmap("heads", doc["analyses"]["heads"]).show()                       # doctest: +SKIP

Each heatmap holds one trace per metric of the analysis and a dropdown to switch between them.
"""

import plotly.graph_objects as go

_COLORSCALE = "Viridis"


def heatmap(name: str, result: dict) -> go.Figure:
    """Layer (rows) x head (columns) heatmap of every metric of one analysis, primary metric shown first."""
    metrics = result["metrics"]
    primary = result["primary"]
    order = [primary] + [m for m in metrics if m != primary] if primary in metrics else list(metrics)
    fig = go.Figure()
    for i, key in enumerate(order):
        m = metrics[key]
        n_cols = len(m["scores"][0]) if m["scores"] else 0
        x = m.get("columns") or list(range(n_cols))
        fig.add_trace(go.Heatmap(
            z=m["scores"], x=x, y=list(range(len(m["scores"]))), colorscale=_COLORSCALE, visible=i == 0,
            name=key, colorbar={"title": {"text": key}},
            hovertemplate=f"layer %{{y}}, {'column' if m.get('columns') else 'head'} %{{x}}<br>{key} = "
                          f"%{{z:.3f}}<extra>{m['role']}</extra>"))
    buttons = [{"label": key, "method": "update",
                "args": [{"visible": [j == i for j in range(len(order))]},
                         {"title.text": _title(name, key, metrics[key])}]} for i, key in enumerate(order)]
    first = metrics[order[0]] if order else {"role": "", "columns": None}
    fig.update_layout(
        title={"text": _title(name, order[0], first) if order else name},
        xaxis={"title": {"text": "column" if first.get("columns") else "head"}, "type": "category"},
        yaxis={"title": {"text": "layer"}, "autorange": "reversed"},
        updatemenus=[{"buttons": buttons, "x": 1.0, "xanchor": "right", "y": 1.15, "yanchor": "top"}]
        if len(order) > 1 else [],
        height=max(320, 16 * len(first.get("scores", [])) + 160), margin={"t": 90, "l": 60, "r": 20, "b": 50},
    )
    return fig


def _title(name: str, key: str, metric: dict) -> str:
    return f"{name}: {key} <span style='font-size:11px'>({metric['role']})</span>"


def pattern_figure(label: str, example: dict, tokens: list[str]) -> go.Figure:
    """One head's (downsampled) attention pattern on the example prompt: queries down, keys across."""
    def names(starts):
        return [f"{i}:{tokens[i]!r}" if i < len(tokens) else str(i) for i in starts]

    fig = go.Figure(go.Heatmap(z=example["pattern"], x=names(example["cols"]), y=names(example["rows"]),
                               colorscale="Blues", zmin=0, hovertemplate="query %{y}<br>key %{x}<br>%{z:.3f}"
                                                                         "<extra></extra>"))
    fig.update_layout(title={"text": f"head {label}: attention on the example prompt"},
                      yaxis={"autorange": "reversed", "title": {"text": "query"}, "type": "category"},
                      xaxis={"title": {"text": "key"}, "type": "category"}, height=520,
                      margin={"t": 50, "l": 110, "r": 20, "b": 110})
    return fig


def top_heads(doc: dict, k: int = 5) -> list[dict]:
    """Rows for the report's table: the `k` best heads of every head-level metric, with their roles.

    A head is given a metric's role when its score passes the metric's threshold (or, for metrics
    without one, when it is among the `k` highest).
    """
    rows = []
    for name, result in doc["analyses"].items():
        for key, m in result["metrics"].items():
            flat = sorted(((s, layer, col) for layer, row in enumerate(m["scores"])
                           for col, s in enumerate(row)),
                          reverse=True)[:k]
            for rank, (score, layer, col) in enumerate(flat, 1):
                thr = m.get("threshold")
                rows.append({"analysis": name, "metric": key, "rank": rank, "layer": layer,
                             "head": m["columns"][col] if m.get("columns") else col, "score": score,
                             "role": m["role"] if thr is None or score > thr
                             else f"(below {thr}) {m['role']}"})
    return rows
