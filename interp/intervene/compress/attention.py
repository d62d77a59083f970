"""Attention over a `CompressedCache`: each KV-head group attends over its own keys.

Full heads run SDPA over every cached key with transformers' mask. Streaming heads run SDPA over
their kept slots only (`sink + window` between passes), with visibility

    live slot  and  transformers' mask at the slot's position  and  (sink slot  or  q_pos - k_pos < window)

so prefill queries are already streaming (as in DuoAttention) and decoding matches a masked
simulation of the same rule exactly. Positions are absolute cache positions (never re-indexed).
Query heads map to KV heads as in the model (`head // (n_heads // n_kv_heads)`).
"""

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from interp.axes import HeadOutput
from interp.capture import Activations, AttentionCall, Patterns, Probe, Stats, context
from interp.intervene.compress.policy import KVPolicy, PolicyError
from interp.masks import visible_keys


def streaming_visible(
    base: Bool[Tensor, "batch query slots"],
    pos: Int[Tensor, "batch slots"],
    is_sink: Bool[Tensor, "batch slots"],
    q_pos: Int[Tensor, " query"],
    window: int,
) -> Bool[Tensor, "batch query slots"]:
    """Which slots a streaming head's queries see: `base` and (sink or within `window` of the query)."""
    recent = (q_pos[None, :, None] - pos[:, None, :]) < window
    return base & (is_sink[:, None, :] | recent)


def _base_visible(call: AttentionCall, pos: Tensor, live: Tensor, q_pos: Tensor, k_len: int,
                  layer_in_order: bool) -> Tensor:
    """transformers' visibility at each slot's position, for every query (`[batch, query, slots]`)."""
    if call.attention_mask is None:
        if call.q_len > 1:
            causal = pos[:, None, :] <= q_pos[None, :, None]
        else:
            causal = torch.ones_like(pos[:, None, :], dtype=torch.bool)
        return causal & live[:, None, :]
    full = visible_keys(call.attention_mask, batch=call.batch, q_len=call.q_len, k_len=k_len,
                        is_causal=call.is_causal, device=call.query.device)
    if layer_in_order:  # nothing evicted or reordered yet (prefill): slot i holds position i
        return full & live[:, None, :]
    idx = pos.clamp(max=k_len - 1)[:, None, :].expand(-1, call.q_len, -1)
    return full.gather(2, idx) & live[:, None, :]


def _sdpa(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scaling: float, causal: bool) -> Tensor:
    if q.shape[1] == 0:
        return q.new_zeros(q.shape[0], q.shape[1], q.shape[2], v.shape[-1])
    z = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                         is_causal=causal and mask is None, scale=scaling,
                                                         enable_gqa=q.shape[1] != k.shape[1])
    return z.nan_to_num(0.0)  # queries that see no key (padding rows) output 0


def grouped_attention(call: AttentionCall, layer, policy: KVPolicy) -> HeadOutput:
    """The layer's `z` (`[batch, query, head, d_head]`) from `layer`'s (a `HeadSplitLayer`) storage."""
    q, n_q = call.query, call.q_len
    group = call.n_heads // policy.shape[1]
    k_len = layer.seen
    q_pos = torch.arange(k_len - n_q, k_len, device=q.device)
    if call.attention_mask is not None:  # which new tokens are real: the last query sees every real key
        last = visible_keys(call.attention_mask, batch=call.batch, q_len=n_q, k_len=k_len,
                            is_causal=call.is_causal, rows=slice(n_q - 1, n_q), device=q.device)[:, 0]
        layer.mark_padding(last[:, k_len - n_q:])
    z = q.new_empty(call.batch, n_q, call.n_heads, layer.s_values.shape[-1])
    full_q = (layer.full_heads[:, None] * group + torch.arange(group, device=q.device)).flatten()
    stream_q = (layer.stream_heads[:, None] * group + torch.arange(group, device=q.device)).flatten()
    if len(full_q):
        mask = call.attention_mask
        if mask is not None and mask.dtype == torch.bool:
            mask = mask[..., :k_len]
        z[:, :, full_q] = _sdpa(q[:, full_q], layer.keys, layer.values, mask, call.scaling,
                                causal=n_q > 1).transpose(1, 2)
    if len(stream_q):
        base = _base_visible(call, layer.pos, layer.live, q_pos, k_len, layer.in_order)
        vis = streaming_visible(base, layer.pos, layer.sink_slots(), q_pos, layer.window)
        z[:, :, stream_q] = _sdpa(q[:, stream_q], layer.s_keys, layer.s_values, vis[:, None], call.scaling,
                                  causal=False).transpose(1, 2)
    layer.evict()
    return z


class Compression(Probe):
    """Capture-engine probe that runs every layer's attention over a `CompressedCache`."""

    def __init__(self, policy: KVPolicy):
        self.policy = policy
        self.cache = None  # set per forward pass by `interp.compress`

    def begin(self, model) -> None:
        self.stack = model.adapter.main_stack

    def wants(self, stack: str, layer: int) -> bool:
        return stack == self.stack

    def attention_output(self, call: AttentionCall) -> HeadOutput | None:
        _check_neighbours(self, call, context.active())
        if call.attention_mask is not None and call.attention_mask.dtype != torch.bool:
            raise PolicyError("KV compression needs boolean attention masks (SDPA-style); this model adds a "
                              "bias.")
        return grouped_attention(call, self.cache.layers[call.layer], self.policy)


def _check_neighbours(me: Probe, call: AttentionCall, sessions) -> None:
    """Refuse probes that need every head's keys (patterns, q/k/v, statistics, weight editors)."""
    for session in sessions:
        if call.module not in session.sites:
            continue
        for p in session.probes:
            if p is me or not p.wants(call.stack, call.layer):
                continue
            heads = p.edited_heads(call)
            reads_keys = isinstance(p, (Patterns, Stats)) or (isinstance(p, Activations) and p.what != "z")
            if reads_keys or (heads is not None and len(heads)):
                raise PolicyError(
                    f"{type(p).__name__} needs every head's full keys at layer {call.layer}, which a "
                    "compressed cache frees; inside interp.compress capture z / residual sites or use zero "
                    "/ mean ablation."
                )
