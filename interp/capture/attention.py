"""The one attention function `interp` registers in transformers' `AttentionInterface`.

While a capture is open the model runs with `attn_implementation="interp"`. For each attention
layer this function asks the captures open in the current context (`interp.capture.context`)
which probes want the layer:

- no capture of this context on this model: the model's previous implementation, unchanged (a
  plain forward pass of another thread computes what it computes without any capture);
- none: plain `sdpa_attention_forward` — an idle layer costs nothing;
- recorders only: SDPA output (or the output a probe computes itself, as `Stats` does in the same
  pass as its statistics), then each recorder reads what it needs from the `AttentionCall`;
- weight editors: the edited heads are recomputed exactly (eager math, fp32 softmax), edited, and
  their output replaces SDPA's; `z` editors then change the per-head output.

It returns `(z, None)` with `z` of shape `[batch, query, head, d_head]`, like every transformers
attention function; `z` is exactly the input of the output projection, split by head.

The mask builder registered beside it is SDPA's, so padded batches get a boolean mask and
unpadded prefill gets `None` (causal), as with `attn_implementation="sdpa"`; passes of other
contexts get the previous implementation's mask. Each probe receives the `AttentionCall` stamped
with its own capture's step and key offset, while the editors of all nested captures compose.
"""

from dataclasses import replace

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

from interp.capture import context
from interp.capture.call import AttentionCall
from interp.capture.context import IMPLEMENTATION


def interp_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    sessions = [s for s in context.active() if module in s.sites]
    if not sessions:  # no capture of this context watches this model: what it computed before "interp"
        previous = context.previous_attention(module)
        if previous is not None:
            return previous(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                            **kwargs)
    softcap = kwargs.pop("softcap", None)
    sinks = kwargs.pop("s_aux", None)
    indices = kwargs.pop("indices", None)
    # a sparse-attention indexer (DeepSeek-V3.2 style) picked the keys each query reads
    if indices is not None:
        attention_mask = _select_keys(attention_mask, indices, key.shape[-2], query.dtype)
    exact = softcap is not None or sinks is not None  # SDPA can neither soft-cap nor add learned sinks
    probes, base = [], None  # (probe, the call stamped with its own capture's step)
    for session in sessions:
        stack, layer = session.sites[module]
        wanting = [p for p in session.probes if p.wants(stack, layer)]
        if not wanting:
            continue
        if base is None:
            base = _make_call(module, stack, layer, 0, query, key, value, attention_mask, scaling, softcap,
                              kwargs.get("position_bias"), sinks)
        call = replace(base, step=session.step)
        if call.is_causal:  # keys end at the newest token; a sliding cache may have dropped the oldest
            call.key_offset = max(0, session.seen_before + call.q_len - call.k_len)
        probes += [(p, call) for p in wanting]
    if base is None and not exact:
        return _sdpa(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
    if base is None:  # nothing captured here, but SDPA cannot compute this layer: use the exact path
        base = _make_call(module, "", -1, 0, query, key, value, attention_mask, scaling, softcap,
                          kwargs.get("position_bias"), sinks)

    editors = [(p, c, h) for p, c in probes if (h := p.edited_heads(c)) is not None and len(h)]
    z = next((out for p, c in probes if (out := p.attention_output(c)) is not None), None)
    if z is None and exact:
        z = _exact_output(base, torch.arange(base.n_heads, device=query.device), editors)
        editors = []
    elif z is None:
        z = _sdpa(module, query, key, value, attention_mask, scaling, dropout, **kwargs)[0]
    if editors:
        heads = torch.unique(torch.cat([h.to(query.device) for _, _, h in editors]))
        if z.requires_grad:  # SDPA's backward needs its output as it returned it
            z = z.clone()
        z[:, :, heads] = _exact_output(base, heads, editors)
    for _, call in probes:
        call.edited = base.edited
    for probe, call in probes:
        z = probe.edit_z(call, z)
    for probe, call in probes:
        probe.record(call, z)
    return z, None


def _sdpa(module, query, key, value, mask, scaling, dropout, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, except that a masked multi-query pass of a GQA model on CPU reads
    each kv head once (`enable_gqa`). transformers repeats keys and values per query head whenever
    there is a mask (CUDA's kernels would fall back to plain math); on CPU the flash kernel takes
    GQA with a mask, with the same result, and the copy costs more than the attention itself for a
    short prompt over a long cache (4 x 100 queries over 800 keys, SmolLM2 shapes: 10.2 -> 5.6 ms).
    """
    groups = getattr(module, "num_key_value_groups", 1)
    if (query.device.type == "cpu" and mask is not None and groups > 1 and query.shape[2] > 1
            and dropout == 0.0 and kwargs.get("position_bias") is None and kwargs.get("softcap") is None):
        z = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling,
                                                             enable_gqa=True)
        return z.transpose(1, 2).contiguous(), None
    return sdpa_attention_forward(module, query, key, value, mask, scaling=scaling, dropout=dropout, **kwargs)


def _select_keys(mask, indices: torch.Tensor, k_len: int, dtype) -> torch.Tensor:
    """`mask` ([batch, 1, query, key], bool or additive) restricted to the keys in `indices` [batch, query,
    topk].

    What transformers' eager / SDPA paths do with the indexer's choice; other backends get `indices`.
    """
    dropped = torch.ones(*indices.shape[:2], k_len, dtype=torch.bool, device=indices.device)
    dropped = dropped.scatter(-1, indices.long(), False)[:, None]
    if mask is None:
        hide = torch.zeros(dropped.shape, dtype=dtype, device=dropped.device)
        return hide.masked_fill(dropped, torch.finfo(dtype).min)
    if mask.dtype == torch.bool:
        return mask & ~dropped
    return mask.masked_fill(dropped, torch.finfo(mask.dtype).min)


def _make_call(module, stack, layer, step, query, key, value, mask, scaling, softcap, position_bias, sinks):
    scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
    return AttentionCall(stack=stack, layer=layer, module=module, query=query, key=key, value=value,
                         attention_mask=mask, scaling=scaling, softcap=softcap,
                         is_causal=bool(getattr(module, "is_causal", True)), step=step,
                         position_bias=position_bias, sinks=sinks)


def _exact_output(call: AttentionCall, heads: torch.Tensor, editors) -> torch.Tensor:
    """Eager attention for `heads`, with every editor's weight edit applied, as
    `[batch, query, head, d_head]`."""
    weights = call.weights(heads)
    for probe, own_call, edited in editors:
        edited = edited.to(heads.device)
        # positions of edited heads within `heads`
        idx = torch.nonzero(heads[:, None] == edited[None, :])[:, 0]
        weights[:, idx] = probe.edit_weights(own_call, weights[:, idx], heads[idx])
    call.edited = (heads, weights)
    v = call.value[:, call.kv_head_of(heads)]
    out = torch.matmul(weights.to(v.dtype), v)
    return out.transpose(1, 2)


def interp_mask(*args, config=None, **kwargs):
    """SDPA's mask for passes a capture of this context watches; otherwise the previous implementation's."""
    previous = context.previous_implementation(config)
    if previous in (None, IMPLEMENTATION) or context.watched(config):
        return sdpa_mask(*args, config=config, **kwargs)
    build = ALL_MASK_ATTENTION_FUNCTIONS._global_mapping.get(previous)
    # None: as transformers' early exit
    return None if build is None else build(*args, config=config, **kwargs)


def register() -> None:
    """Make `attn_implementation="interp"` available to every transformers model (idempotent)."""
    AttentionInterface.register(IMPLEMENTATION, interp_attention)
    AttentionMaskInterface.register(IMPLEMENTATION, interp_mask)


register()

__all__ = ["IMPLEMENTATION", "interp_attention", "interp_mask", "register", "repeat_kv"]
