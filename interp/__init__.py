"""interp: mechanistic interpretability for transformer language models.

    >>> import interp
    >>> m = interp.load()                                   # embedded SmolLM2-135M-Instruct, offline
    >>> with interp.capture(m, patterns=[5]) as rec:
    ...     m(**m.encode(["The cat sat on the mat."]))
    >>> rec.patterns[5].shape                               # [batch, head, query, key]
    torch.Size([1, 9, 8, 8])

The names below load on first use, so `import interp` (and `interp --help`) does not import torch.
"""

import importlib
import importlib.util
import sys
import types
from functools import cache

from interp.errors import InterpError
from interp.version import __version__

__all__ = [
    "load", "Model", "Adapter", "adapter_for",
    "capture", "Recording", "Stats", "Patterns", "Activations", "Residual", "Patch", "Probe", "AttentionCall",
    "ablate", "calibrate", "compress", "Calibration", "run_scan", "InterpError", "__version__",
]


@cache
def _exports() -> dict:
    # lazy: start-up (torch and transformers load on the first use of the API); all returned via locals()
    from interp.capture import (  # noqa: F401
        Activations,
        AttentionCall,
        Patch,
        Patterns,
        Probe,
        Recording,
        Residual,
        Stats,
        capture,
    )
    from interp.intervene import ablate  # noqa: F401
    from interp.intervene.calibrate import Calibration, calibrate  # noqa: F401
    from interp.intervene.compress import compress  # noqa: F401
    from interp.models import Adapter, Model, adapter_for, load  # noqa: F401
    from interp.scan import run_scan  # noqa: F401

    return {name: value for name, value in locals().items()}


def __getattr__(name: str):
    if name in __all__:
        value = _exports()[name]
        globals()[name] = value
        return value
    if importlib.util.find_spec(f"{__name__}.{name}") is not None:  # a subpackage not imported yet
        return importlib.import_module(f"{__name__}.{name}")  # lazy: start-up
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Interp(types.ModuleType):
    """`interp.capture` is the function, also after the `interp.capture` package has been imported."""

    @property
    def capture(self):
        return _exports()["capture"]

    @capture.setter
    def capture(self, _module) -> None:
        pass  # the import system records the subpackage on its parent here; the function stays


sys.modules[__name__].__class__ = _Interp
