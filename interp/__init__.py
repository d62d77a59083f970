"""interp: mechanistic interpretability for transformer language models.

    >>> import interp
    >>> m = interp.load()                                   # embedded SmolLM2-135M-Instruct, offline
    >>> with interp.capture(m, patterns=[5]) as rec:
    ...     m(**m.encode(["The cat sat on the mat."]))
    >>> rec.patterns[5].shape                               # [batch, head, query, key]
    torch.Size([1, 9, 8, 8])
"""

from interp.capture import (Activations, AttentionCall, Patch, Patterns, Probe, Recording, Residual, Stats,
                            capture)
from interp.errors import InterpError
from interp.intervene import ablate
from interp.intervene.calibrate import Calibration, calibrate
from interp.intervene.compress import compress
from interp.models import Adapter, Model, adapter_for, load
from interp.scan import scan

__version__ = "0.1.0"

__all__ = [
    "load", "Model", "Adapter", "adapter_for",
    "capture", "Recording", "Stats", "Patterns", "Activations", "Residual", "Patch", "Probe", "AttentionCall",
    "ablate", "calibrate", "compress", "Calibration", "scan", "InterpError", "__version__",
]
