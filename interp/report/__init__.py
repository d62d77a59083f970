"""Presenting a scan: the offline `report.html` (head atlas, head cards, correlations), plotly figures,
the token-level attention view, PNG/SVG exports, and the comparison of two scans.

    >>> from interp.report import render_html, export_figures, attention_view   # doctest: +SKIP
    >>> doc = interp.scan.load_scan("runs/smollm2")                      # doctest: +SKIP
    >>> export_figures(doc, "runs/smollm2/figures", formats=("png", "svg"))   # doctest: +SKIP
    >>> attention_view(rec, 18, [6, 7], tokens)        # in Jupyter: hover a token  # doctest: +SKIP
"""

from interp.report.atlas import Atlas, atlas, spearman_matrix
from interp.report.attention import AttentionView, attention_view
from interp.report.export import ExportUnavailableError, export_figures
from interp.report.figures import heatmap, pattern_figure, top_heads
from interp.report.html import render_html

__all__ = ["Atlas", "AttentionView", "ExportUnavailableError", "atlas", "attention_view", "export_figures",
           "heatmap", "pattern_figure", "render_html", "spearman_matrix", "top_heads"]
