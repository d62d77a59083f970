"""A KV cache that keeps full keys/values for full heads and sink + window for streaming heads.

Built on transformers' `Cache` / `CacheLayerMixin` API (no forked modeling code). Each layer
stores two groups of KV heads:

- full heads: `[batch, n_full, seen, d_head]`, grown by concatenation like `DynamicLayer`;
- streaming heads: `[batch, n_stream, slots, d_head]` with the absolute cache position of every
  slot (`pos`, `[batch, slots]`) and whether it holds a kept real token (`live`). After each
  forward pass `evict` keeps, per sequence, its first `sink` real tokens and the positions within
  `window` of the newest one, so `slots <= sink + window` between passes (a pass adds its new
  tokens first: prefill briefly holds the prompt, as any cache must while it is being attended).

`update` returns the full group's keys and values; the layer's attention is computed per group by
`interp.intervene.compress.attention` from this layer's storage. `get_seq_length` counts every
token seen (positions are never re-indexed: kept keys keep their original RoPE positions, as in
DuoAttention), so transformers builds masks over all positions.
"""

import torch
from jaxtyping import Bool, Int
from torch import Tensor
from transformers.cache_utils import Cache, CacheLayerMixin

from interp.intervene.compress.policy import KVPolicy


class HeadSplitLayer(CacheLayerMixin):
    """One layer's split cache (see the module docstring)."""

    is_sliding = False
    is_croppable = False

    def __init__(self, full_heads: Tensor, stream_heads: Tensor, sink: int, window: int):
        super().__init__()
        self.full_heads, self.stream_heads = full_heads, stream_heads
        self.sink, self.window = sink, window
        self.seen = 0
        self.in_order = True  # slot i holds position i (until the first eviction)

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        b, _, _, d = key_states.shape
        dev, dt = key_states.device, key_states.dtype
        self.full_heads, self.stream_heads = self.full_heads.to(dev), self.stream_heads.to(dev)
        self.keys = key_states.new_zeros(b, len(self.full_heads), 0, d)
        self.values = value_states.new_zeros(b, len(self.full_heads), 0, value_states.shape[-1])
        self.s_keys = torch.zeros(b, len(self.stream_heads), 0, d, dtype=dt, device=dev)
        self.s_values = torch.zeros(b, len(self.stream_heads), 0, value_states.shape[-1], dtype=dt,
                                    device=dev)
        self.pos = torch.zeros(b, 0, dtype=torch.long, device=dev)
        self.live = torch.zeros(b, 0, dtype=torch.bool, device=dev)
        self.device = dev
        self.is_initialized = True

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        self.keys = torch.cat([self.keys, key_states[:, self.full_heads]], dim=-2)
        self.values = torch.cat([self.values, value_states[:, self.full_heads]], dim=-2)
        self.s_keys = torch.cat([self.s_keys, key_states[:, self.stream_heads]], dim=-2)
        self.s_values = torch.cat([self.s_values, value_states[:, self.stream_heads]], dim=-2)
        new = torch.arange(self.seen, self.seen + n, device=self.device).expand(key_states.shape[0], -1)
        self.pos = torch.cat([self.pos, new], dim=1)
        self.live = torch.cat([self.live, torch.ones_like(new, dtype=torch.bool)], dim=1)
        self.seen += n
        return self.keys, self.values

    def mark_padding(self, valid_new: Bool[Tensor, "batch new"]) -> None:
        """Mark which of the newest tokens are real (padding is never kept or attended)."""
        n = valid_new.shape[1]
        self.live[:, -n:] &= valid_new

    def sink_slots(self) -> Bool[Tensor, "batch slots"]:
        """Slots holding one of a sequence's first `sink` real tokens (slots are in position order
        among live ones; dead slots count for nothing)."""
        return self.live & (torch.cumsum(self.live.int(), dim=1) <= self.sink)

    def evict(self) -> None:
        """Keep each sequence's sink tokens and its `window` newest positions; free the rest."""
        keep = self.live & (self.sink_slots() | (self.pos > self.seen - 1 - self.window))
        if bool(keep.all()):
            return
        self.in_order = False
        width = int(keep.sum(1).max())
        order = torch.argsort((~keep).int(), dim=1, stable=True)[:, :width]  # kept slots first, in order
        self.live = keep.gather(1, order)
        self.pos = self.pos.gather(1, order)
        idx = order[:, None, :, None]
        self.s_keys = self.s_keys.gather(2, idx.expand(-1, self.s_keys.shape[1], -1, self.s_keys.shape[3]))
        self.s_values = self.s_values.gather(2,
                                             idx.expand(-1, self.s_values.shape[1], -1,
                                                        self.s_values.shape[3]))

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.seen + query_length, 0

    def get_seq_length(self) -> int:
        return self.seen

    def get_max_length(self) -> int:
        return -1

    def stored_bytes(self) -> int:
        if not self.is_initialized:
            return 0
        return sum(t.numel() * t.element_size() for t in (self.keys, self.values, self.s_keys, self.s_values))

    def reset(self) -> None:
        self.keys = self.values = None
        self.is_initialized = False
        self.seen = 0
        self.in_order = True

    def reorder_cache(self, beam_idx: Int[Tensor, " batch"]) -> None:
        for name in ("keys", "values", "s_keys", "s_values", "pos", "live"):
            setattr(self, name, getattr(self, name).index_select(0, beam_idx.to(self.device)))

    def batch_select_indices(self, indices: Tensor) -> None:
        for name in ("keys", "values", "s_keys", "s_values", "pos", "live"):
            setattr(self, name, getattr(self, name)[indices])


class CompressedCache(Cache):
    """`Cache` of `HeadSplitLayer`s for a `KVPolicy` (one layer per model layer).

    >>> cache = CompressedCache(policy)                                   # doctest: +SKIP
    >>> m.hf(**batch, cache=cache); cache.stored_bytes()                  # doctest: +SKIP
    """

    def __init__(self, policy: KVPolicy):
        self.policy = policy
        layers = [HeadSplitLayer(policy.full_heads(i), policy.streaming_heads(i), policy.sink, policy.window)
                  for i in range(policy.shape[0])]
        super().__init__(layers=layers)

    def stored_bytes(self) -> int:
        """Bytes of keys and values held now."""
        return sum(layer.stored_bytes() for layer in self.layers)


def cache_bytes(cache: Cache) -> int:
    """Bytes of keys and values a transformers cache holds now (a `CompressedCache` counts both groups).

    >>> cache_bytes(out.cache)                                           # doctest: +SKIP
    """
    if isinstance(cache, CompressedCache):
        return cache.stored_bytes()
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers if layer.keys is not None)
