"""Capture through TransformerLens hook points, for `load(..., backend="tl")`.

The bridge runs HF modules in eager mode and exposes `blocks.{L}.attn.hook_pattern`,
`hook_z`, `hook_q/k/v` and `blocks.{L}.hook_resid_pre/...`. We attach plain forward hooks to those
`HookPoint` modules (removed on exit like every other hook) and store tensors in `interp`'s axis
order, so a TL capture and an HF capture return the same `Recording`.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

from interp.capture.probe import ModuleHook, Probe
from interp.capture.store import LayerMap

# recording name -> (hook point under blocks.{L}, permutation from TL's layout to ours, position axis)
_TL_POINTS = {
    "patterns": ("attn.hook_pattern", None, 2),        # [batch, head, query, key] already
    "z": ("attn.hook_z", None, 1),                     # TL: [batch, pos, head, d_head] = ours
    # TL: [batch, pos, head, d_head] -> [batch, head, pos, d_head]
    "q": ("attn.hook_q", (0, 2, 1, 3), 2),
    "k": ("attn.hook_k", (0, 2, 1, 3), 2),
    "v": ("attn.hook_v", (0, 2, 1, 3), 2),
    "resid_pre": ("hook_resid_pre", None, 1),
    "resid_post": ("hook_resid_post", None, 1),
    "attn_out": ("hook_attn_out", None, 1),
    "mlp_out": ("hook_mlp_out", None, 1),
}


@dataclass
class TLHook(Probe):
    """Record one TransformerLens hook point per layer."""

    name: str = "patterns"
    layers: Sequence[int] | None = None
    data: LayerMap = field(init=False, repr=False)

    def begin(self, model) -> None:
        self.data = LayerMap(model.adapter.main_stack, cat_dim=_TL_POINTS[self.name][2],
                             pad_last=self.name == "patterns")
        n = model.adapter.n_layers()
        self.layers = list(range(n)) if self.layers is None else [model.adapter.check_layer(i)
                                                                  for i in self.layers]

    def module_hooks(self, model) -> list[ModuleHook]:
        point, perm, _ = _TL_POINTS[self.name]
        hooks = []
        for layer in self.layers:
            module = model.bridge.hook_dict[f"blocks.{layer}.{point}"]

            def fn(module, args, kwargs, output, layer=layer):
                t = output.detach()
                # some bridges flatten heads: split them
                if self.name in ("q", "k", "v", "z") and t.ndim == 3:
                    t = t.unflatten(-1, (-1, model.adapter.head_dim))
                self.data.append(model.adapter.main_stack, layer, t.permute(*perm) if perm else t)

            hooks.append((module, "post", fn))
        return hooks


def tl_probe(name: str, spec) -> TLHook | None:
    if spec is None or spec is False:
        return None
    if isinstance(spec, Probe):
        raise TypeError(f"backend='tl' records {name} from hook points; pass True or a list of layers, not a "
                        "probe.")
    layers = None if spec is True else [spec] if isinstance(spec, int) else list(spec)
    return TLHook(name=name, layers=layers)
