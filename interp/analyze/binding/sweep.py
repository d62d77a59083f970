"""Outcome labels and the per-n patching sweep over layers, with Wilson intervals on every share.

Which of the `n` candidates wins after patching is labelled with the mechanism that predicts it
(positional / lexical / reflexive), "no effect" (the original answer) or "other". The unpatched
prediction gets the same labels, so a model's position bias is never mistaken for a positional effect.

    >>> s = sweep(model, tok, BindingTask("foods", tok), 5, [0, 1], pairs=400)   # doctest: +SKIP
    >>> s.shares(1)["lexical"], s.intervals(1)["lexical"]                         # doctest: +SKIP

Sample size: a share's 95% Wilson interval is at most +-0.049 wide with 400 pairs (share 0.5),
+-0.069 with 200, +-0.096 with 100.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from scipy.stats import binomtest
from torch import Tensor

from interp.analyze.binding.mixing import MixingData
from interp.analyze.binding.patching import patched_logits, residuals
from interp.models.model import as_model
from interp.parallel import check_same, check_work, map_units
from interp.tasks.binding import BindingTask, Counterfactual, tokenize_prompts

__all__ = ["LABELS", "Sweep", "counterfactuals", "outcome_labels", "patch_batch", "share_interval", "shares",
           "sweep", "sweeps"]

LABELS = ("positional", "lexical", "reflexive", "no effect", "other")


def outcome_labels(pred: Int[Tensor, " batch"], pairs: list[Counterfactual]) -> list[str]:
    """Label each predicted group (index into the ORIGINAL groups) by the mechanism it matches."""
    labels = []
    for g, cf in zip(pred.tolist(), pairs):
        match = [name for name, grp in cf.label_groups().items() if grp == g]
        labels.append(match[-1] if match else "other")  # mechanism labels outrank "no effect"
    return labels


def shares(labels: list[str]) -> dict[str, float]:
    total = max(len(labels), 1)
    return {name: labels.count(name) / total for name in LABELS}


def share_interval(count: int, total: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a share `count / total` (scipy's `binomtest`).

    >>> [round(v, 3) for v in share_interval(200, 400)]
    [0.451, 0.549]
    """
    if total == 0:
        return (0.0, 1.0)
    ci = binomtest(count, total).proportion_ci(level, method="wilson")
    return (float(ci.low), float(ci.high))


@dataclass
class Sweep:
    """Patched candidate distributions of `pairs` (all with n groups) at every layer of `layers`."""

    n: int
    layers: list[int]
    pairs: list[Counterfactual]
    probs: Float[Tensor, "layer batch group"]  # softmax over the n candidates (original group order)
    base: Float[Tensor, "batch group"]  # unpatched
    cf_probs: Float[Tensor, "batch group"]  # the counterfactual prompt itself (its own group order)

    def labels(self, layer: int | None) -> list[str]:
        probs = self.base if layer is None else self.probs[self.layers.index(layer)]
        return outcome_labels(probs.argmax(-1), self.pairs)

    def shares(self, layer: int | None) -> dict[str, float]:
        return shares(self.labels(layer))

    def intervals(self, layer: int | None, level: float = 0.95) -> dict[str, tuple[float, float]]:
        """95% Wilson interval of each share over the `len(pairs)` prompts."""
        labels = self.labels(layer)
        return {name: share_interval(labels.count(name), len(labels), level) for name in LABELS}

    def by_position(self, layer: int | None) -> list[dict[str, float]]:
        """Outcome shares grouped by the group the positional mechanism points to."""
        labels = self.labels(layer)
        return [shares([lab for lab, cf in zip(labels, self.pairs) if cf.positional == p])
                for p in range(self.n)]

    def mixing_data(self, layer: int, width: int) -> MixingData:
        probs = torch.zeros(len(self.pairs), width)
        probs[:, : self.n] = self.probs[self.layers.index(layer)]
        t = lambda attr: torch.tensor([getattr(cf, attr) for cf in self.pairs])
        return MixingData(probs, torch.full((len(self.pairs),), self.n), t("positional"), t("lexical"),
                          t("reflexive"))


def counterfactuals(task: BindingTask, n: int, pairs: int, seed: int = 0) -> list[Counterfactual]:
    """`pairs` counterfactuals with n groups, the positional group cycling over 0..n-1 (seeded per n)."""
    rng = random.Random(seed * 1000 + n)
    return [task.counterfactual(n, rng=rng, positional=p) for p in sorted(i % n for i in range(pairs))]


def patch_batch(model, tokenizer, chunk: list[Counterfactual], layers: list[int], mode: str = "cached"
                ) -> tuple[Tensor, Tensor, Tensor]:
    """One batch of pairs: the patched candidate probs `[layer, batch, group]`, the unpatched ones and the
    counterfactual prompt's own `[batch, group]` (softmax over the n candidates, on CPU)."""
    device = next(as_model(model).hf.parameters()).device
    orig = tokenize_prompts(tokenizer, [c.original for c in chunk])
    cf = tokenize_prompts(tokenizer, [c.counterfactual for c in chunk])
    ob = {k: v.to(device) for k, v in orig.batch().items()}
    cb = {k: v.to(device) for k, v in cf.batch().items()}
    src, cf_logits = residuals(model, cb, layers, with_logits=True)
    logits = patched_logits(model, ob, src, layers, mode=mode, unpatched=True).cpu()
    cand = orig.candidates
    return (logits[:-1].gather(2, cand[None].expand(len(layers), -1, -1)).softmax(-1),
            logits[-1].gather(1, cand).softmax(-1), cf_logits.cpu().gather(1, cf.candidates).softmax(-1))


def sweeps(model, tokenizer, task: BindingTask, pairs: dict[int, int], layers: list[int], *, seed: int = 0,
           batch_size: int = 32, mode: str = "cached", progress=None) -> dict[int, Sweep]:
    """`sweep` for every n of `pairs` (n -> number of pairs); the batches of all n form one list of units.

    Under torchrun (`interp.parallel.init()` first) the units (one batch of `batch_size` pairs of one n)
    are dealt to the ranks and merged in order: every rank returns what one process returns.
    `progress()` is called once per finished batch, on every rank.
    """
    check_same({"pairs": pairs, "layers": list(layers), "seed": seed, "batch_size": batch_size, "mode": mode,
                "task": [task.template.name, task.format], "model": as_model(model).name},
               "binding settings")
    cfs = {n: counterfactuals(task, n, count, seed) for n, count in pairs.items()}
    units = [(n, i) for n, c in cfs.items() for i in range(0, len(c), batch_size)]
    check_work(len(units), f"batches of {batch_size} counterfactual pairs", "lower the batch size")

    def unit(u: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
        n, start = u
        return patch_batch(model, tokenizer, cfs[n][start: start + batch_size], layers, mode)

    done = map_units(unit, units, on_done=lambda i, r: progress and progress())
    out = {}
    for n, c in cfs.items():
        parts = [r for (m, _), r in zip(units, done) if m == n]
        probs, base, cf_probs = zip(*parts)
        out[n] = Sweep(n, list(layers), c, torch.cat(probs, 1), torch.cat(base), torch.cat(cf_probs))
    return out


def sweep(model, tokenizer, task: BindingTask, n: int, layers: list[int], *, pairs: int = 400,
          seed: int = 0, batch_size: int = 32, mode: str = "cached", progress=None) -> Sweep:
    """Build `pairs` counterfactuals (positional group cycling over 0..n-1) and patch them at every layer.

    Under torchrun the batches are dealt to the ranks (see `sweeps`).
    """
    return sweeps(model, tokenizer, task, {n: pairs}, layers, seed=seed, batch_size=batch_size, mode=mode,
                  progress=progress)[n]
