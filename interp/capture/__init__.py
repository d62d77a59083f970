"""The capture engine: one attention function, probes that record and edit, hooks that never leak.

Public surface:
    capture(model, patterns=..., q/k/v/z=..., resid_pre/resid_post/attn_out/mlp_out=..., edits=[...])
    Patterns, Activations, Residual, Patch   — recorders and the residual patch editor
    Stats                                    — streaming per-head statistics (no patterns stored)
    Probe, AttentionCall                     — to write your own recorder or editor
    visible_keys                             — the mask semantics, in one place
"""

from interp.capture.attention import IMPLEMENTATION
from interp.capture.call import AttentionCall
from interp.capture.hooks import Patch, Residual
from interp.capture.probe import Probe
from interp.capture.recorders import Activations, Patterns
from interp.capture.session import Recording, capture
from interp.capture.stats import Stats
from interp.masks import visible_keys

__all__ = ["capture", "Recording", "Stats", "Patterns", "Activations", "Residual", "Patch", "Probe",
           "AttentionCall", "visible_keys", "IMPLEMENTATION"]
