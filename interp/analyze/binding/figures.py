"""Plotly figures for a `BindingResult`: layer sweep, positional U-shape, model vs observed.

    >>> figs = result.figures()                     # doctest: +SKIP
    >>> figs["sweep"].write_html("sweep.html")      # doctest: +SKIP
"""

from __future__ import annotations

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from interp.analyze.binding.mixing import fit_mixing_model

COLOURS = {"positional": "#1f77b4", "lexical": "#2ca02c", "reflexive": "#d62728", "no effect": "#7f7f7f",
           "other": "#ff7f0e"}


def sweep_figure(result) -> go.Figure:
    """Outcome shares after patching at each layer, one panel per n."""
    ns = sorted(result.sweeps)
    fig = make_subplots(rows=1, cols=len(ns), subplot_titles=[f"n = {n}" for n in ns], shared_yaxes=True)
    for col, n in enumerate(ns, start=1):
        s = result.sweeps[n]
        for label, colour in COLOURS.items():
            fig.add_trace(go.Scatter(x=s.layers, y=[s.shares(layer)[label] for layer in s.layers], name=label,
                                     line={"color": colour}, legendgroup=label, showlegend=col == 1), row=1,
                                     col=col)
        fig.add_vline(x=result.read_layer, line_dash="dot", row=1, col=col)
    fig.update_layout(title="Interchange at the last token: outcome share by patched layer",
                      yaxis_title="share of prompts", height=380)
    fig.update_xaxes(title_text="layer")
    return fig


def position_figure(result) -> go.Figure:
    """Shares by the positional group at the read layer (solid) beside the unpatched labels (dashed)."""
    ns = sorted(result.sweeps)
    fig = make_subplots(rows=1, cols=len(ns), subplot_titles=[f"n = {n}" for n in ns], shared_yaxes=True)
    for col, n in enumerate(ns, start=1):
        s = result.sweeps[n]
        patched, base = s.by_position(result.read_layer), s.by_position(None)
        for label, colour in COLOURS.items():
            fig.add_trace(go.Scatter(x=list(range(n)), y=[p[label] for p in patched], name=label,
                                     line={"color": colour}, legendgroup=label, showlegend=col == 1), row=1,
                                     col=col)
            fig.add_trace(go.Scatter(x=list(range(n)), y=[p[label] for p in base],
                                     name=f"{label} (unpatched)", line={"color": colour, "dash": "dash"},
                                     legendgroup=label, showlegend=False, opacity=0.5), row=1, col=col)
    fig.update_layout(title=f"Outcome shares by positional group, layer {result.read_layer} "
                            "(dashed: same labels on the unpatched prediction)", height=380)
    fig.update_xaxes(title_text="group the positional mechanism points to")
    return fig


def fit_figure(result) -> go.Figure:
    """Mean observed vs fitted mixing-model distribution per positional group (largest n, all prompts)."""
    n = max(result.sweeps)
    s = result.sweeps[n]
    data = s.mixing_data(result.read_layer, n)
    model = fit_mixing_model(data, "full", seed=result.config.seed)
    with torch.no_grad():
        pred = model(data)
    fig = make_subplots(rows=1, cols=n, subplot_titles=[f"p = {p}" for p in range(n)], shared_yaxes=True)
    for p in range(n):
        rows = data.positional == p
        fig.add_trace(go.Bar(x=list(range(n)), y=data.probs[rows].mean(0).tolist(), name="observed",
                             marker_color="#444", showlegend=p == 0), row=1, col=p + 1)
        fig.add_trace(go.Bar(x=list(range(n)), y=pred[rows].mean(0).tolist(), name="mixing model",
                             marker_color="#1f77b4", showlegend=p == 0), row=1, col=p + 1)
    fig.update_layout(title=f"n = {n}, layer {result.read_layer}: mean candidate distribution, observed vs "
                            "model (all three terms, fitted on these prompts)", barmode="group", height=320)
    return fig


def figures(result) -> dict[str, go.Figure]:
    return {"sweep": sweep_figure(result), "positions": position_figure(result), "fit": fit_figure(result)}
