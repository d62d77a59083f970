"""Greedy decoding of many prompts: prompt passes over reused prefixes, decoding batched.

Why not `generate` on a left-padded batch: prompts that share a prefix (NIAH trials share the
haystack before their needle) need not recompute it. The KV cache of a prefix does not depend on
what comes after it, so a prompt pass starts from the longest prefix it shares with a recently
cached prompt (`PrefixCache`), and consecutive prompts that start from the same length run as one
pass, right-padded after it (no mask needed: causal attention keeps real tokens from seeing the
padding). A left-padded batch would also need an explicit mask and pay for its padding (SmolLM2,
500 tokens, one core: 1.8 s per prompt alone, 2.5 s per row in a padded batch of 8). Decoding,
where batching pays most, runs on the prompts' caches stacked with left padding, in buffers with
room for the new tokens (`DynamicCache` would copy the whole cache at every step).

    >>> prefix = PrefixCache()
    >>> out = greedy(m, [ids_a, ids_b], max_new_tokens=8, eos={2}, pad_id=0, prefix=prefix)  # doctest: +SKIP
    >>> out.sequences[:, out.prompt_len:]                                          # generated tokens

Runs inside an open `capture(...)` session when the caller wants probes or edits: every forward
pass (each prompt pass, then each batched decoding step) goes through the capture engine.
Models whose cache is not a plain `DynamicCache` of full-attention layers (sliding windows,
linear-attention hybrids) are not supported here: `supports_prefix_decoding` tells.

Memory: the KV caches of the batch's prompts and of the prefix cache's `keep` recent prompts,
plus the stacked copy while decoding.
"""

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from jaxtyping import Int
from torch import Tensor
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


def supports_prefix_decoding(hf) -> bool:
    """True when the model's generation cache is a `DynamicCache` of plain full-attention layers."""
    if hf.config.is_encoder_decoder:
        return False
    try:
        layers = DynamicCache(config=hf.config).layers
    except (AttributeError, KeyError, TypeError, ValueError):  # a config the cache cannot read: general path
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class PrefixCache:
    """What `greedy` keeps between calls: the token ids and KV caches of the last `keep` prompts (a
    prompt pass starts from the longest prefix it shares with any of them), and the decoding buffers.

    Order prompts so that shared prefixes come before the prompts that extend them (e.g. NIAH trials
    by their text before the needle, deepest needle first) to reuse the most. The decoding buffers
    are reused by the next call when they are big enough: writing into freshly allocated memory
    costs its page faults, ~1.5 s per GB on the 2-core development machine, more than the copy.
    Memory: up to `keep` prompts' KV caches, plus the largest batch's decoding buffers.
    """

    def __init__(self, min_tokens: int = 16, keep: int = 8):
        self.min_tokens, self.keep = min_tokens, keep
        # (ids, per layer (keys, values))
        self.entries: list[tuple[list[int], list[tuple[Tensor, Tensor]]]] = []
        # layer -> decoding (keys, values) [batch, kv, pos, d]
        self.buffers: dict[int, tuple[Tensor, Tensor]] = {}

    def reusable(self, ids: Sequence[int]) -> tuple[int, int]:
        """(n, entry): how many leading tokens of `ids` can come from the cache, and from which entry
        (n = 0: none, start from nothing). At least one token is always left to run."""
        best, entry = 0, -1
        for e, (cached, _) in enumerate(self.entries):
            n = min(common_prefix(cached, ids), len(ids) - 1)
            if n > best:
                best, entry = n, e
        return (best, entry) if best >= self.min_tokens else (0, -1)

    def start(self, entries: Sequence[int], n: int) -> DynamicCache | None:
        """A fresh cache whose row `r` holds the first `n` positions of entry `entries[r]`
        (None when n = 0)."""
        if n == 0:
            return None
        if len(set(entries)) == 1:  # one source: a view repeated over the batch, no copy
            layers = self.entries[entries[0]][1]
            return DynamicCache(ddp_cache_data=[(k[:, :, :n].expand(len(entries), -1, -1, -1),
                                                 v[:, :, :n].expand(len(entries), -1, -1, -1))
                                                 for k, v in layers])
        per_layer = zip(*[self.entries[e][1] for e in entries])
        return DynamicCache(ddp_cache_data=[(torch.cat([k[:, :, :n] for k, _ in rows]),
                                             torch.cat([v[:, :, :n] for _, v in rows]))
                                             for rows in per_layer])

    def remember(self, ids: Sequence[int], layers: list[tuple[Tensor, Tensor]]) -> None:
        self.entries = [*self.entries, (list(ids), layers)][-self.keep:]

    def decoding_buffers(self, layer: int, batch: int, positions: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values buffers `[batch, kv_head, positions, d_head]` for `layer`, shaped and typed
        like `like`: views into the buffers of an earlier call when they are big enough."""
        if layer in self.buffers:
            keys, values = self.buffers[layer]
            if (keys.shape[0] >= batch and keys.shape[2] >= positions and keys.shape[1] == like.shape[1]
                    and keys.shape[3] == like.shape[3] and keys.dtype == like.dtype
                    and keys.device == like.device):
                return keys[:batch, :, :positions], values[:batch, :, :positions]
        room = -(-positions // 256) * 256  # slack: the next batch's prompts may be a few tokens longer
        shape = (batch, like.shape[1], room, like.shape[3])
        self.buffers[layer] = (like.new_empty(shape), like.new_empty(shape))
        return self.buffers[layer][0][:, :, :positions], self.buffers[layer][1][:, :, :positions]


class PassObserver(Protocol):
    """What `greedy` tells a probe around each forward pass."""

    def before_pass(self, query_rows: Int[Tensor, " batch"]) -> None:
        """Per batch row, the query row whose attention predicts the row's next token."""

    def after_pass(self) -> None:
        """The pass is done: collect what it recorded."""


@dataclass
class Decoded:
    """Greedy outputs of a batch, left-padded: `sequences[:, :prompt_len]` are the prompts."""

    sequences: Int[Tensor, "batch pos"]
    pads: Int[Tensor, " batch"]  # left padding of each row
    prompt_len: int
    steps: int  # decoding steps run (generated tokens per row, EOS and after included)


@torch.no_grad()
def greedy(
    model,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    eos: set[int],
    pad_id: int,
    prefix: PrefixCache | None = None,
    observer: PassObserver | None = None,
) -> Decoded:
    """Greedy-decode `prompts` (token id lists) together; stops when every row has produced an EOS.

    Prompt passes run in `prompts` order, consecutive prompts that reuse the same cached prefix
    together (right-padded after it); then one batched pass per decoding step. `observer` hears
    about every pass (key positions: each prompt's own during its prompt pass, left-padded by
    `Decoded.pads` while decoding).
    """
    prefix = prefix or PrefixCache()
    rows, first, i = [], [], 0
    while i < len(prompts):
        group, sources = [prompts[i]], [prefix.reusable(prompts[i])]
        while i + len(group) < len(prompts):
            ids = prompts[i + len(group)]
            source = prefix.reusable(ids)
            if not _shares_pass(group, sources[0][0], ids, source[0], close=prefix.min_tokens):
                break
            group.append(ids)
            sources.append(source)
        n = min(n for n, _ in sources)
        layers, tokens = _prompt_pass(model, group, prefix.start([e for _, e in sources], n), n, pad_id,
                                      observer)
        for ids, own in zip(group, layers):
            prefix.remember(ids, own)
        rows += layers
        first.append(tokens)
        i += len(group)
    lengths = torch.tensor([len(ids) for ids in prompts])
    width = int(lengths.max())
    pads = width - lengths
    sequences = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    for row, ids in enumerate(prompts):
        sequences[row, pads[row]:] = torch.tensor(ids)
    tokens = torch.cat(first)
    generated = [tokens]
    done = _is_eos(tokens, eos)
    cache = (_stack(rows, pads, max_new_tokens - 1, prefix) if max_new_tokens > 1 and not bool(done.all())
             else None)
    mask = (torch.arange(width)[None] >= pads[:, None]).long()
    for step in range(1, max_new_tokens):
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones(len(prompts), 1, dtype=torch.long)], 1)
        if observer:
            observer.before_pass(torch.zeros(len(prompts), dtype=torch.long))
        out = model.hf(
            input_ids=tokens[:, None].to(model.device),
            attention_mask=mask.to(model.device),
            position_ids=(lengths + step - 1)[:, None].to(model.device),
            cache=cache,
            use_cache=True,
        )
        if observer:
            observer.after_pass()
        cache = out.cache
        tokens = out.logits[:, -1].argmax(-1).cpu()
        generated.append(tokens)
        done |= _is_eos(tokens, eos)
    return Decoded(torch.cat([sequences, torch.stack(generated, 1)], 1), pads, width, len(generated))


def _prompt_pass(
    model, group: Sequence[Sequence[int]], cache: DynamicCache | None, n: int, pad_id: int, observer
) -> tuple[list[list[tuple[Tensor, Tensor]]], Int[Tensor, " batch"]]:
    """One forward over `group[r][n:]`, right-padded, after a cache of their shared first `n` tokens.

    Returns each prompt's own cache (per layer `(keys, values)` views, `[1, kv_head, pos, d_head]`)
    and its first generated token. Right padding needs no mask: causal attention keeps every real
    token from seeing the padding after it. Only each prompt's last position reaches the vocabulary
    (the vocabulary product is ~20% of a small model's per-token work).
    """
    tails = [ids[n:] for ids in group]
    ids = torch.full((len(tails), max(map(len, tails))), pad_id, dtype=torch.long)
    for row, tail in enumerate(tails):
        ids[row, : len(tail)] = torch.tensor(tail)
    last = torch.tensor([len(tail) - 1 for tail in tails])
    keep = torch.unique(last)  # positions whose logits are needed, shared by all rows
    kwargs = {"logits_to_keep": keep.to(model.device)} if _takes_logits_to_keep(model.hf) else {}
    if observer:
        observer.before_pass(last)
    out = model.hf(input_ids=ids.to(model.device), cache=cache, use_cache=True, **kwargs)
    if observer:
        observer.after_pass()
    logits = out.logits if kwargs else out.logits[:, keep.to(model.device)]
    tokens = logits[torch.arange(len(tails)), torch.searchsorted(keep, last)].argmax(-1).cpu()
    layers = [[(k[r : r + 1, :, : n + len(tail)], v[r : r + 1, :, : n + len(tail)]) for k, v, _ in out.cache]
              for r, tail in enumerate(tails)]
    return layers, tokens


def _shares_pass(group: Sequence[Sequence[int]], n: int, ids: Sequence[int], reuse: int, close: int) -> bool:
    """Whether `ids` (which can reuse `reuse` cached tokens) joins `group`'s prompt pass (whose first
    prompt reuses `n`): it reuses about as much, would not reuse much more of a group member (not
    cached yet), and is about as long (right padding is wasted work)."""
    return (abs(reuse - n) < close and abs(len(ids) - len(group[0])) < close
            and max(common_prefix(g, ids) for g in group) - n < close)


def _takes_logits_to_keep(hf) -> bool:
    return "logits_to_keep" in inspect.signature(hf.forward).parameters


def _is_eos(tokens: Int[Tensor, " batch"], eos: set[int]) -> Tensor:
    if not eos:
        return torch.zeros_like(tokens, dtype=torch.bool)
    return torch.isin(tokens, torch.tensor(sorted(eos), dtype=torch.long))


def _stack(caches: Sequence[list[tuple[Tensor, Tensor]]], pads: Tensor, room: int,
           prefix: PrefixCache) -> DynamicCache:
    """One batched cache from single-prompt caches, each left-padded with zeros by `pads[row]`, with
    `room` free positions after the longest so that decoding writes in place (`_ReservedLayer`), in
    the prefix cache's decoding buffers."""
    layers = []
    for layer, per_prompt in enumerate(zip(*caches)):
        k0 = per_prompt[0][0]
        width = int(pads[0]) + k0.shape[-2]
        # room: written before read
        keys, values = prefix.decoding_buffers(layer, len(caches), width + room, k0)
        for row, ((k, v), pad) in enumerate(zip(per_prompt, pads.tolist())):
            keys[row, :, :pad], values[row, :, :pad] = 0.0, 0.0  # masked, but must be finite (0 x nan = nan)
            keys[row, :, pad:width] = k[0]
            values[row, :, pad:width] = v[0]
        layers.append(_ReservedLayer(keys, values, width))
    cache = DynamicCache()
    cache.layers, cache.layer_class_to_replicate = layers, None
    return cache


class _ReservedLayer(DynamicLayer):
    """A `DynamicLayer` whose keys and values are views into buffers with room to grow.

    `DynamicLayer` concatenates every new position onto the whole cache, which copies the cache at
    every decoding step (for 8 prompts of 870 tokens on SmolLM2, 320 MB per step: more time than
    the step's matrix products). This layer writes the new positions into the free room instead,
    and falls back to concatenation once the room is used up.
    """

    def __init__(self, keys: Tensor, values: Tensor, length: int):
        super().__init__()
        self.buffers = (keys, values)
        self.keys, self.values = keys[..., :length, :], values[..., :length, :]
        self.device, self.is_initialized = keys.device, True

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        keys, values = self.buffers
        start, stop = self.keys.shape[-2], self.keys.shape[-2] + key_states.shape[-2]
        # no room, or cropped: concatenate
        if stop > keys.shape[-2] or self.keys.data_ptr() != keys.data_ptr():
            return super().update(key_states, value_states, *args, **kwargs)
        keys[..., start:stop, :] = key_states
        values[..., start:stop, :] = value_states
        self.keys, self.values = keys[..., :stop, :], values[..., :stop, :]
        return self.keys, self.values


__all__ = ["Decoded", "PassObserver", "PrefixCache", "common_prefix", "greedy", "supports_prefix_decoding"]
