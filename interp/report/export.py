"""Static PNG / SVG exports of a scan's heatmaps, through kaleido (which drives a local Chromium).

Offline: kaleido renders with its own copy of plotly.js and a locally installed Chrome/Chromium;
nothing is fetched. Without kaleido or a browser, `export_figures` raises `ExportUnavailableError`
saying what to install; the HTML report never needs either.

    >>> export_figures(doc, "runs/smollm2/figures")        # doctest: +SKIP
    ['runs/smollm2/figures/heatmap-heads.png', 'runs/smollm2/figures/heatmap-heads.svg']
"""

import importlib.util
from pathlib import Path

from interp.errors import InterpError
from interp.report.figures import heatmap

FORMATS = ("png", "svg")


class ExportUnavailableError(InterpError):
    """Static image export needs kaleido and a local Chrome/Chromium."""


def check_export(formats) -> list[str]:
    """The formats as a list, or a clear error for an unknown one or a missing kaleido
    (checked before a scan)."""
    formats = [formats] if isinstance(formats, str) else list(formats)
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise InterpError(f"cannot export {', '.join(bad) or 'nothing'}; choose from {', '.join(FORMATS)}.")
    if importlib.util.find_spec("kaleido") is None:
        raise ExportUnavailableError("PNG/SVG export needs kaleido: `pip install kaleido` (and a local "
                                     "Chromium, e.g. `apt-get install chromium`). report.html works without "
                                     "it.")
    return formats


def export_figures(doc: dict, out: str | Path, formats=FORMATS, scale: float = 2.0) -> list[Path]:
    """Write one image per analysis heatmap (its primary metric) and format; return the paths."""
    formats = check_export(formats)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, result in doc["analyses"].items():
        fig = heatmap(name, result)
        fig.update_layout(updatemenus=[])  # a dropdown means nothing on a static image
        for fmt in formats:
            path = out / f"heatmap-{name}.{fmt}"
            try:
                fig.write_image(str(path), format=fmt, scale=scale if fmt == "png" else 1)
            except Exception as err:  # kaleido reports a missing browser in several ways
                raise ExportUnavailableError(
                    f"kaleido could not render {path.name} ({type(err).__name__}: {err}); install a local "
                    "Chromium (`apt-get install chromium`) or run `kaleido_get_chrome`. report.html works "
                    "without it."
                ) from err
            written.append(path)
    return written
