"""The probe protocol: how recorders and editors plug into the capture engine.

A probe is a small object the engine calls at fixed sites of every forward pass:

| site                 | method                      | used by                                  |
|----------------------|-----------------------------|------------------------------------------|
| attention output     | `attention_output(call)`    | streaming statistics fused with the output |
| attention weights    | `edit_weights(call, w, heads)` | uniform ablation, ACT calibration     |
| per-head output `z`  | `edit_z(call, z)`           | zero / mean ablation                     |
| after attention      | `record(call, z)`           | patterns, q/k/v, z, streaming statistics |
| module hooks         | `module_hooks(model)`       | residual stream, MLP out, patching       |

Only layers a probe `wants` are routed through the exact path; all other layers run plain SDPA,
so an idle capture costs nothing. Subclass `Probe` and override what you need:

    >>> class CountCalls(Probe):
    ...     def __init__(self):
    ...         self.n = 0
    ...     def record(self, call, z):
    ...         self.n += 1
"""

from collections.abc import Callable

import torch
from torch import Tensor

from interp.axes import HeadOutput, Pattern
from interp.capture.call import AttentionCall

# (module, "pre" | "post", hook function) — installed by the engine, removed in `finally`.
ModuleHook = tuple[torch.nn.Module, str, Callable]


class Probe:
    """Base class for recorders and editors. Every method is optional."""

    #: the attention stack this probe looks at ("decoder" for decoder-only models).
    stack: str | None = None

    def wants(self, stack: str, layer: int) -> bool:
        """Whether this probe needs the attention call of (`stack`, `layer`)."""
        return False

    def attention_output(self, call: AttentionCall) -> HeadOutput | None:
        """Compute the layer's attention output yourself (e.g. fused with statistics), or None for SDPA."""
        return None

    def edited_heads(self, call: AttentionCall) -> Tensor | None:
        """Query heads whose attention weights `edit_weights` will change at this call, or None."""
        return None

    def edit_weights(self, call: AttentionCall, weights: Pattern, heads: Tensor) -> Pattern:
        """Return edited fp32 weights for `heads` (`weights` is `[batch, len(heads), query, key]`)."""
        return weights

    def edit_z(self, call: AttentionCall, z: HeadOutput) -> HeadOutput:
        """Return an edited per-head output `z` (`[batch, query, head, d_head]`)."""
        return z

    def record(self, call: AttentionCall, z: HeadOutput) -> None:
        """Look at the final attention call and its output; store what you need."""

    def module_hooks(self, model: "interp.models.Model") -> list[ModuleHook]:  # noqa: F821
        """Forward hooks on modules (residual stream, MLP), installed for the capture's lifetime."""
        return []

    def begin(self, model: "interp.models.Model") -> None:  # noqa: F821
        """Called when the capture starts (validate indices against the model here)."""

    def end(self) -> None:
        """Called when the capture ends, also on exceptions."""


def cached_tokens(forward_kwargs: dict) -> int:
    """Tokens already in the KV cache handed to a model's forward (0 for a fresh sequence)."""
    # `cache` since transformers 5.2x
    cache = forward_kwargs.get("cache", forward_kwargs.get("past_key_values"))
    return int(cache.get_seq_length()) if cache is not None and hasattr(cache, "get_seq_length") else 0
