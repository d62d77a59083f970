"""Module-hook probes: the residual stream, attention and MLP outputs, and residual patching.

| site         | hook                                   | tensor                      |
|--------------|----------------------------------------|-----------------------------|
| `resid_pre`  | forward pre-hook on block `L`          | residual entering block `L` |
| `resid_post` | forward hook on block `L`              | residual leaving block `L`  |
| `attn_out`   | forward hook on block `L`'s attention  | attention output (after the output projection) |
| `mlp_out`    | forward hook on block `L`'s MLP        | MLP output                  |

All are `[batch, pos, d_model]`. Hooks are installed by the capture engine and removed in its
`finally`, so nothing outlives the `with` block.

    >>> with interp.capture(m, resid_pre=[10]) as rec:          # doctest: +SKIP
    ...     m(**batch)
    >>> rec.resid_pre[10].shape                                 # doctest: +SKIP
    torch.Size([2, 17, 576])
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from interp.capture.probe import ModuleHook, Probe
from interp.capture.store import LayerMap

SITES = ("resid_pre", "resid_post", "attn_out", "mlp_out")


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def _hidden_from_args(args, kwargs) -> Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _replace_hidden(args, kwargs, hidden: Tensor):
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def _site_module(model, site: str, layer: int, stack: str):
    if site in ("resid_pre", "resid_post"):
        return model.adapter.blocks(stack)[model.adapter.check_layer(layer, stack)]
    if site == "attn_out":
        return model.adapter.attention(layer, stack)
    if site == "mlp_out":
        return model.adapter.mlp(layer, stack)
    raise ValueError(f"unknown activation site {site!r}; choose one of {', '.join(SITES)}.")


@dataclass
class Residual(Probe):
    """Record one activation site (`resid_pre`, `resid_post`, `attn_out`, `mlp_out`) at `layers`."""

    site: str = "resid_pre"
    layers: Sequence[int] | None = None
    stack: str | None = None
    dtype: torch.dtype | None = None
    device: torch.device | str | None = None
    data: LayerMap = field(init=False, repr=False)

    def begin(self, model) -> None:
        self.stack = self.stack or model.adapter.main_stack
        self.data = LayerMap(model.adapter.main_stack, cat_dim=1)

    def module_hooks(self, model) -> list[ModuleHook]:
        layers = self.layers if self.layers is not None else range(model.adapter.n_layers(self.stack))
        hooks = []
        for layer in layers:
            module = _site_module(model, self.site, layer, self.stack)
            layer = model.adapter.check_layer(layer, self.stack)
            if self.site == "resid_pre":
                hooks.append((module, "pre", self._pre_hook(layer)))
            else:
                hooks.append((module, "post", self._post_hook(layer)))
        return hooks

    def _keep(self, layer: int, t: Tensor) -> None:
        t = t.detach()
        if self.dtype is not None or self.device is not None:
            t = t.to(device=self.device or t.device, dtype=self.dtype or t.dtype)
        self.data.append(self.stack, layer, t)

    def _pre_hook(self, layer: int) -> Callable:
        def hook(module, args, kwargs):
            self._keep(layer, _hidden_from_args(args, kwargs))

        return hook

    def _post_hook(self, layer: int) -> Callable:
        def hook(module, args, kwargs, output):
            self._keep(layer, _first(output))

        return hook


@dataclass
class Patch(Probe):
    """Replace the residual stream entering block `layer` at `positions` with `values`.

    `values` is `[batch, len(positions), d_model]` (or broadcastable); by default only the first
    forward pass of the capture (the prefill) is patched. `steps` counts the passes of the capture
    the patch is given to (from 0 again in each capture it is reused in), in its own thread. This is the
    interchange intervention of activation patching: run the counterfactual with `resid_pre=[layer]`, then
    patch its vector in.

        >>> with interp.capture(m, resid_pre=[12]) as cf:                              # doctest: +SKIP
        ...     m(**counterfactual)
        >>> patch = Patch(layer=12, positions=[-1], values=cf.resid_pre[12][:, -1:])  # doctest: +SKIP
        >>> with interp.capture(m, edits=[patch]):                                     # doctest: +SKIP
        ...     logits = m(**base).logits
    """

    layer: int = 0
    positions: Sequence[int] = (-1,)
    values: Tensor | None = None
    stack: str | None = None
    steps: Sequence[int] | None = (0,)
    site: str = "resid_pre"
    _step: int = field(default=0, init=False, repr=False)

    is_editor = True  # it changes the forward pass through module hooks

    def begin(self, model) -> None:
        self._step = 0

    def module_hooks(self, model) -> list[ModuleHook]:
        stack = self.stack or model.adapter.main_stack
        module = _site_module(model, self.site, self.layer, stack)
        if self.site == "resid_pre":
            return [(module, "pre", self._pre_hook), (model.hf, "pre", self._count)]
        return [(module, "post", self._post_hook), (model.hf, "pre", self._count)]

    def _count(self, module, args, kwargs):
        self._step += 1

    def _patched(self, hidden: Tensor) -> Tensor:
        if self.steps is not None and self._step - 1 not in self.steps:
            return hidden
        hidden = hidden.clone()
        hidden[:, list(self.positions)] = self.values.to(hidden.device, hidden.dtype)
        return hidden

    def _pre_hook(self, module, args, kwargs):
        return _replace_hidden(args, kwargs, self._patched(_hidden_from_args(args, kwargs)))

    def _post_hook(self, module, args, kwargs, output):
        if isinstance(output, tuple):
            return (self._patched(output[0]), *output[1:])
        return self._patched(output)
