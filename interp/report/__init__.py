"""Presenting a scan: plotly figures, the offline `report.html`, PNG/SVG exports.

    >>> from interp.report import render_html, export_figures             # doctest: +SKIP
    >>> doc = interp.scan.load_scan("runs/smollm2")                      # doctest: +SKIP
    >>> export_figures(doc, "runs/smollm2/figures", formats=("png", "svg"))   # doctest: +SKIP
"""

from interp.report.export import ExportUnavailableError, export_figures
from interp.report.figures import heatmap, pattern_figure, top_heads
from interp.report.html import render_html

__all__ = ["ExportUnavailableError", "export_figures", "heatmap", "pattern_figure", "render_html", "top_heads"]
