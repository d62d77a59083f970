"""Loading models and describing their architecture.

    load(ref, backend=...)  -> Model      adapters: Adapter, adapter_for, FAMILIES
"""

from interp.models.adapters import FAMILIES, Adapter, adapter_for
from interp.models.load import BACKENDS, EMBEDDED, load
from interp.models.model import Model, as_model

__all__ = ["load", "Model", "as_model", "Adapter", "adapter_for", "FAMILIES", "BACKENDS", "EMBEDDED"]
