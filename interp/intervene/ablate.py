"""Head ablation as a capture-engine editor: zero, mean or uniform-attention, GQA-aware.

| mode      | what the head does                                   | engine site     |
|-----------|------------------------------------------------------|-----------------|
| `zero`    | its output `z` (the `o_proj` input slice) is 0        | `edit_z`        |
| `mean`    | its `z` is its mean over a reference set (`mean_z`)   | `edit_z`        |
| `uniform` | uniform over its visible keys (its query zeroed, as the official code masks) | `edit_weights` |

`phase` picks the forward passes: "prefill" (passes that read prompt tokens, with or without a
cached prefix), "decode" (one generated token over a KV cache) or "both". Heads are query heads `(layer,
head)`; `kv_groups=True` widens each to every query head that shares its KV head.

    >>> import interp
    >>> m = interp.load("smollm2")                                                     # doctest: +SKIP
    >>> with ablate(m, [(18, 6), (23, 2)], mode="uniform"):                             # doctest: +SKIP
    ...     out = m.hf.generate(**m.encode(["..."], chat=True), max_new_tokens=8)
    >>> editor = HeadAblation([(5, 0)], mode="zero", phase="decode")                   # compose by hand
    >>> with interp.capture(m, patterns=[5], edits=[editor]) as rec:                   # doctest: +SKIP
    ...     m(**batch)

Memory: zero/mean copy `z` of the ablated layers once; uniform recomputes only the ablated heads'
weights (`batch x heads x query x key` fp32 per ablated layer), so keep it for moderate lengths.
"""

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from interp.axes import HeadOutput, Pattern
from interp.capture import AttentionCall, Probe, capture
from interp.errors import InterpError, as_index
from interp.models.model import as_model

Head = tuple[int, int]
MODES = ("zero", "mean", "uniform")
PHASES = ("prefill", "decode", "both")
ZMeans = dict[int, Float[Tensor, "head d_head"]]


def is_prefill(call: AttentionCall) -> bool:
    """A pass that reads prompt tokens: several queries, or none cached before (a one-token prompt).

    A prompt may be fed over a cached prefix (`interp.analyze.decoding`), so "no cached keys" alone
    would miss it; decoding passes add one token to a cache.
    """
    return call.q_len > 1 or call.q_len == call.k_len


@dataclass
class HeadAblation(Probe):
    """Ablate query heads `(layer, head)` in `mode` during `phase` (see the module docstring).

    `means` (mode "mean"): per layer, a `[head, d_head]` tensor of mean outputs, e.g. from `mean_z`.
    """

    heads: Sequence[Head] = ()
    mode: str = "zero"
    phase: str = "both"
    kv_groups: bool = False
    means: ZMeans | None = None
    stack: str | None = None
    _by_layer: dict[int, Tensor] = field(default_factory=dict, init=False, repr=False)

    def begin(self, model) -> None:
        if self.mode not in MODES:
            raise InterpError(f"unknown ablation mode {self.mode!r}; choose one of {', '.join(MODES)}.")
        if self.phase not in PHASES:
            raise InterpError(f"unknown ablation phase {self.phase!r}; choose one of {', '.join(PHASES)}.")
        adapter = model.adapter
        self.stack = self.stack or adapter.main_stack
        self._by_layer = {}
        for layer, head in expand_heads(
            self.heads, adapter.n_heads, adapter.n_kv_heads, self.kv_groups, check=adapter
        ):
            self._by_layer.setdefault(adapter.check_layer(layer, self.stack), set()).add(head)
        self._by_layer = {l: torch.tensor(sorted(h)) for l, h in self._by_layer.items()}
        if self.mode == "mean":
            self._check_means(adapter)

    def _check_means(self, adapter) -> None:
        if self.means is None:
            raise InterpError(
                "mode='mean' needs `means`: compute them with interp.intervene.mean_z(model, batches)."
            )
        for layer in self._by_layer:
            if layer not in self.means:
                raise InterpError(
                    f"`means` has no entry for layer {layer}; compute it with mean_z over that layer."
                )
            if tuple(self.means[layer].shape) != (adapter.n_heads, adapter.head_dim):
                raise InterpError(
                    f"means[{layer}] has shape {tuple(self.means[layer].shape)}; expected "
                    f"[head, d_head] = ({adapter.n_heads}, {adapter.head_dim})."
                )

    def wants(self, stack: str, layer: int) -> bool:
        return stack == self.stack and layer in self._by_layer

    def _active(self, call: AttentionCall) -> bool:
        return self.phase == "both" or (self.phase == "prefill") == is_prefill(call)

    def edited_heads(self, call: AttentionCall) -> Tensor | None:
        if self.mode != "uniform" or not self._active(call):
            return None
        return self._by_layer[call.layer]

    def edit_weights(self, call: AttentionCall, weights: Pattern, heads: Tensor) -> Pattern:
        visible = call.visible().float()  # [batch, query, key]
        uniform = visible / visible.sum(-1, keepdim=True).clamp_min(1.0)  # rows seeing nothing stay 0
        return uniform[:, None].expand_as(weights).clone()

    def edit_z(self, call: AttentionCall, z: HeadOutput) -> HeadOutput:
        if self.mode == "uniform" or not self._active(call):
            return z
        heads = self._by_layer[call.layer].to(z.device)
        z = z.clone()
        if self.mode == "zero":
            z[:, :, heads] = 0
        else:
            z[:, :, heads] = self.means[call.layer][heads].to(z.device, z.dtype)
        return z


def acts_per_pass(editors: Sequence[Probe]) -> bool:
    """True when every editor is a head ablation: each acts on every forward pass alone and row by row,
    so a shortcut that reuses a cached prefix (or feeds the last token on its own) stays exact. Other
    editors may not: a calibration finds its sinks from all of a prompt's rows."""
    return all(isinstance(e, HeadAblation) for e in editors)


def expand_heads(
    heads: Iterable[Head], n_heads: int, n_kv_heads: int, kv_groups: bool = False, check=None
) -> list[Head]:
    """Validate `(layer, head)` pairs; with `kv_groups`, add every query head sharing each one's KV head.

    >>> expand_heads([(0, 4)], n_heads=9, n_kv_heads=3, kv_groups=True)
    [(0, 3), (0, 4), (0, 5)]
    """
    group = n_heads // n_kv_heads
    out = set()
    for pair in heads:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise InterpError(f"heads are (layer, head) pairs; got {pair!r}.")
        layer, head = as_index(pair[0], "layer"), as_index(pair[1], "head")
        head = check.check_head(head) if check is not None else head % n_heads
        if kv_groups:
            first = (head // group) * group
            out.update((layer, h) for h in range(first, first + group))
        else:
            out.add((layer, head))
    return sorted(out)


@contextmanager
def ablate(
    model,
    heads: Sequence[Head],
    mode: str = "zero",
    *,
    phase: str = "both",
    kv_groups: bool = False,
    means: ZMeans | None = None,
) -> Iterator:
    """Run the block with `heads` ablated; yields the capture's `Recording`. Nests inside other captures."""
    editor = HeadAblation(list(heads), mode=mode, phase=phase, kv_groups=kv_groups, means=means)
    with capture(model, edits=[editor]) as rec:
        yield rec


@dataclass
class _ZSum(Probe):
    """Running sum and count of each head's `z` over real (non-padding) query positions."""

    layers: Sequence[int] | None = None
    stack: str | None = None
    sums: dict = field(default_factory=dict, repr=False)
    counts: dict = field(default_factory=dict, repr=False)

    def begin(self, model) -> None:
        self.stack = self.stack or model.adapter.main_stack

    def wants(self, stack: str, layer: int) -> bool:
        return stack == self.stack and (self.layers is None or layer in self.layers)

    def record(self, call: AttentionCall, z: HeadOutput) -> None:
        real = call.visible().any(-1).to(z.dtype)  # [batch, query]: padding queries see no key
        total = torch.einsum("bq,bqhd->hd", real, z).double()
        self.sums[call.layer] = self.sums.get(call.layer, 0) + total
        self.counts[call.layer] = self.counts.get(call.layer, 0) + real.sum().item()


def mean_z(model, batches: Iterable[dict], layers: Sequence[int] | None = None) -> ZMeans:
    """Mean per-head output `z` over the real tokens of `batches` (dicts of model inputs), per layer.

    >>> means = mean_z(m, [m.encode(texts)])                       # doctest: +SKIP
    >>> with ablate(m, [(3, 1)], mode="mean", means=means): ...     # doctest: +SKIP
    """
    m = as_model(model)
    probe = _ZSum(layers=None if layers is None else [m.adapter.check_layer(l) for l in layers])
    n = 0
    for batch in batches:
        with capture(m, probes=[probe]):
            m(**batch)
        n += 1
    if not n or not probe.counts:
        raise InterpError("mean_z needs at least one non-empty batch of reference inputs.")
    return {l: (probe.sums[l] / probe.counts[l]).float() for l in sorted(probe.sums)}


__all__ = ["MODES", "PHASES", "HeadAblation", "ablate", "acts_per_pass", "expand_heads", "is_prefill",
           "mean_z"]
