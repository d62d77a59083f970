"""`interp scan`: every analysis of one model, resumable, into `scan.json` and `report.html`.

    >>> import interp.scan
    >>> doc = interp.scan.run_scan("smollm2", analyses="heads", out="runs/smollm2")  # doctest: +SKIP
    >>> sorted(interp.scan.available())                                          # doctest: +SKIP
    ['binding', 'heads', 'retrieval', 'saliency', 'sinks']

`interp.scan` is this package; the function that runs a scan is `run_scan` (also `interp.run_scan`).

Add an analysis with `@interp.scan.register(name, ConfigDataclass, help)` (see `registry.py`).
"""

from interp.scan import analyses as _builtin  # noqa: F401  (registers the built-in analyses)
from interp.scan.registry import (
    ANALYSES,
    Analysis,
    AnalysisResult,
    Context,
    Metric,
    UnknownAnalysisError,
    register,
)
from interp.scan.runner import ScanExistsError, load_scan, run_scan
from interp.scan.schema import SCHEMA_VERSION
from interp.scan.store import ScanFileError


def available() -> dict[str, str]:
    """Registered analyses -> their one-line help."""
    return {name: a.help for name, a in ANALYSES.items()}


__all__ = [
    "ANALYSES",
    "SCHEMA_VERSION",
    "Analysis",
    "AnalysisResult",
    "Context",
    "Metric",
    "ScanExistsError",
    "ScanFileError",
    "UnknownAnalysisError",
    "available",
    "load_scan",
    "register",
    "run_scan",
]
