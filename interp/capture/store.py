"""Per-layer storage of recorded tensors across the forward passes of one capture.

A capture may span several forward passes (`generate` runs one per decoding step). Each recorder
appends one tensor per (stack, layer) per pass; a `LayerMap` concatenates them on access along
the position axis. Patterns are placed on the absolute `key` axis: each step's keys start at its
`key_offset` (non-zero when a sliding-window cache dropped old keys) and the rest is zero, so
`rec.patterns[layer]` of a generation is the attention of the whole generated sequence.
"""

from collections.abc import Mapping

import torch
from torch import Tensor


class LayerMap(Mapping):
    """Read-only `{layer: tensor}` (main stack) or `{(stack, layer): tensor}` view of recorded steps.

    >>> m = LayerMap("decoder", cat_dim=1)
    >>> m.append("decoder", 0, torch.zeros(1, 2, 4)); m.append("decoder", 0, torch.ones(1, 1, 4))
    >>> m[0].shape
    torch.Size([1, 3, 4])
    """

    def __init__(self, main_stack: str, cat_dim: int, pad_last: bool = False, n_layers: int | None = None):
        self._main = main_stack
        self._n_layers = n_layers  # lets a negative main-stack layer count from the end
        self._dim = cat_dim
        self._pad_last = pad_last
        self._steps: dict[tuple[str, int], list[Tensor]] = {}
        self._offsets: dict[tuple[str, int], list[int]] = {}

    def append(self, stack: str, layer: int, tensor: Tensor, key_offset: int = 0) -> None:
        self._steps.setdefault((stack, layer), []).append(tensor)
        self._offsets.setdefault((stack, layer), []).append(key_offset)

    def steps(self, layer: int | tuple[str, int]) -> list[Tensor]:
        """The per-forward-pass tensors of one layer, unconcatenated."""
        return self._steps[self._key(layer)]

    def __getitem__(self, layer: int | tuple[str, int]) -> Tensor:
        parts, offsets = self._steps[self._key(layer)], self._offsets[self._key(layer)]
        if len(parts) == 1 and offsets[0] == 0:
            return parts[0]
        if self._pad_last:
            width = max(o + p.shape[-1] for p, o in zip(parts, offsets))
            parts = [torch.nn.functional.pad(p, (o, width - o - p.shape[-1])) for p, o in zip(parts, offsets)]
        return torch.cat(parts, dim=self._dim)

    def _key(self, layer: int | tuple[str, int]) -> tuple[str, int]:
        if isinstance(layer, tuple):
            return layer
        if isinstance(layer, int) and layer < 0 and self._n_layers is not None and layer >= -self._n_layers:
            layer %= self._n_layers
        return (self._main, layer)

    def __iter__(self):
        for stack, layer in self._steps:
            yield layer if stack == self._main else (stack, layer)

    def __len__(self) -> int:
        return len(self._steps)

    def __repr__(self) -> str:
        return f"LayerMap(layers={list(self)})"
