"""The interchange intervention: replace the last-token residual entering a layer by another run's.

Three implementations agree to float tolerance (tested):
- `patched_logits`: the capture engine's `Patch` editor (`patcher="engine"`) or the local
  `residual_patch` forward pre-hooks (`patcher="hooks"`). It runs the prefix once with a KV cache
  and then only the last token per layer (`mode="cached"`; a last-token patch cannot change the
  prefix), or the whole prompt per layer (`mode="full"`).
- `patched_logits_nnsight`: the same edit inside an `nnsight` trace.

    >>> src = residuals(model, cf_batch, [1])                          # doctest: +SKIP
    >>> logits = patched_logits(model, orig_batch, src, [1])           # doctest: +SKIP

Memory: the counterfactual's last-token residual at every patched layer (`layer x batch x d_model`)
and one KV cache of the original prompts.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
from jaxtyping import Float
from torch import Tensor

from interp.capture import Patch, capture
from interp.capture.context import enclosing_editors
from interp.errors import InterpError, check_index
from interp.intervene.ablate import acts_per_pass
from interp.models.model import as_model

__all__ = ["decoder_layers", "patched_logits", "patched_logits_nnsight", "position_ids", "residual_patch",
           "residuals"]

def decoder_layers(model) -> torch.nn.ModuleList:
    """The decoder blocks of a model (through `interp`'s architecture adapter)."""
    m = as_model(model)
    return m.adapter.blocks(m.adapter.main_stack)


@contextmanager
def residual_patch(model, patches: dict[int, Tensor], positions: slice | int = -1):
    """Replace the residual entering decoder layer `L` at `positions` with `patches[L]` for each L.

    `patches[L]` is `[batch, d_model]` for one position or `[batch, pos, d_model]` for a slice.
    Hooks are removed when the block exits, even on error.

        >>> with residual_patch(model, {3: cf_resid}):   # doctest: +SKIP
        ...     logits = model(**batch).logits
    """
    layers = decoder_layers(model)
    handles = []

    def make(value: Tensor):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            hidden = hidden.clone()
            hidden[:, positions] = value.to(hidden.device, hidden.dtype)
            if args:
                return (hidden, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": hidden}
        return hook

    try:
        for layer, value in patches.items():
            layer = check_index("layer", layer, len(layers), where="the model")
            handles.append(layers[layer].register_forward_pre_hook(make(value), with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


def position_ids(mask: Tensor) -> Tensor:
    """Position ids that ignore left padding (the same for padded and unpadded prompts)."""
    return (mask.cumsum(-1) - 1).clamp_min(0)


@torch.no_grad()
def residuals(model, batch: dict[str, Tensor], layers: list[int], *, with_logits: bool = False):
    """The residual stream entering each of `layers` at the last token (the engine's `resid_pre`).

    `with_logits=True` also returns the same forward's last-token logits (`[batch, vocab]`).
    Memory: the engine keeps every position of each layer for the batch before the last is taken.
    """
    m = as_model(model)
    layers = [m.adapter.check_layer(layer, m.adapter.main_stack) for layer in layers]
    with capture(m, resid_pre=layers) as rec:
        out = m.hf(**batch, position_ids=position_ids(batch["attention_mask"]), use_cache=False)
    resid: Float[Tensor, "layer batch d_model"] = torch.stack([rec.resid_pre[layer][:, -1]
                                                               for layer in layers])
    return (resid, out.logits[:, -1].float()) if with_logits else resid


@torch.no_grad()
def patched_logits(model, batch: dict[str, Tensor], source: Float[Tensor, "layer batch d_model"],
                   layers: list[int], *, mode: str = "cached", patcher: str = "engine",
                   unpatched: bool = False) -> Float[Tensor, "layer batch vocab"]:
    """Last-token logits with the residual entering each layer (one at a time) replaced by `source`.

    `layers[i]` is patched with `source[i]`. `mode="cached"` runs the prompt minus its last token
    once with a KV cache and then only the last token per layer (a last-token patch cannot change
    earlier positions); `mode="full"` reruns the whole prompt per layer. `patcher="engine"` uses
    `interp.capture(..., edits=[Patch(...)])`; `patcher="hooks"` the local `residual_patch`.
    `unpatched=True` appends one more row: the logits without any patch.

    Inside editors opened around the call (`with interp.calibrate(...)`), `"cached"` is exact only when
    each of them acts on every pass alone (head ablations); otherwise (a calibration finds its sinks from
    all the prompt's rows) this runs as `"full"`, so the result always equals one pass per layer.
    """
    if mode not in ("cached", "full"):
        raise InterpError(f"unknown patching mode {mode!r}: use 'cached' or 'full'.")
    if patcher not in ("engine", "hooks"):
        raise InterpError(f"unknown patcher {patcher!r}: use 'engine' or 'hooks'.")
    m = as_model(model)
    if mode == "cached" and not acts_per_pass(enclosing_editors(m)):
        mode = "full"
    ids, mask = batch["input_ids"], batch["attention_mask"]
    pos = position_ids(mask)

    def patched(layer: int, value: Tensor):
        if patcher == "hooks":
            return residual_patch(m, {layer: value})
        return capture(m, edits=[Patch(layer=layer, positions=[-1], values=value[:, None])])

    out = []
    if mode == "full":
        for i, layer in enumerate(layers):
            with patched(layer, source[i]):
                out.append(m.hf(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
                           .logits[:, -1].float())
        if unpatched:
            out.append(m.hf(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
                       .logits[:, -1].float())
        return torch.stack(out)
    cache = m.hf(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1],
                 use_cache=True).cache
    for i, layer in enumerate(layers + [None] * unpatched):
        with patched(layer, source[i]) if layer is not None else nullcontext():
            logits = m.hf(input_ids=ids[:, -1:], attention_mask=mask, position_ids=pos[:, -1:],
                          cache=cache, use_cache=True).logits[:, -1].float()
        try:
            cache.crop(-1)  # drop the last token again: the prefix is reused for the next layer
        except (ValueError, RuntimeError) as err:
            raise InterpError(f"this model's KV cache cannot roll back ({err}); use mode='full'.") from err
        out.append(logits)
    return torch.stack(out)


@torch.no_grad()
def patched_logits_nnsight(model, tokenizer, batch: dict[str, Tensor],
                           source: Float[Tensor, "layer batch d_model"], layers: list[int]
                           ) -> Float[Tensor, "layer batch vocab"]:
    """The same intervention as `patched_logits` through an nnsight trace (full prompt per layer)."""
    from nnsight import LanguageModel

    m = as_model(model, tokenizer)
    hf = m.hf
    lm = m.nnsight if m.nnsight is not None else LanguageModel(hf, tokenizer=tokenizer)
    names = {id(m): n for n, m in hf.named_modules()}
    blocks = decoder_layers(model)
    pos = position_ids(batch["attention_mask"])
    out = []
    for i, layer in enumerate(layers):
        block = lm.get(names[id(blocks[check_index("layer", layer, len(blocks))])])
        with lm.trace(dict(batch, position_ids=pos, use_cache=False)):
            block.input[:, -1] = source[i]
            logits = lm.output.logits[:, -1].save()
        out.append(logits.float())
    return torch.stack(out)
