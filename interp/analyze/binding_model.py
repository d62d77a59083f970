"""The causal mixing model of binding retrieval, fitted by Jensen–Shannon divergence.

After an interchange intervention (see `interp.analyze.binding`) the model's distribution over the
`n` candidate answers is explained as a softmax over logits that mix three mechanisms:

    logit(i) = w_pos * exp(-(i - p)^2 / (2 sigma(x_p)^2)) + w_lex * [i == r] + w_ref * [i == s]

with `p`, `r`, `s` the groups the positional, lexical and reflexive mechanisms point to and
`x_p = p / (n - 1)` the relative position of `p`. The positional term is a Gaussian bump whose
width `sigma` is a quadratic (through softplus) in the relative position, so it can be sharp at
the edges and blurred in the middle (the U-shape). Parameters are shared across n.

The fit minimises the mean JS divergence (bits, so 0..1) between modelled and observed
distributions on a train split; `score` reports 1 - JS on held-out examples. Baselines:
`kind="positional"` (w_lex = w_ref = 0, same Gaussian) and `uniform_score` (1/n everywhere).

Example:
    >>> import torch
    >>> obs = torch.tensor([[0.7, 0.2, 0.1, 0.0]]); mask = torch.tensor([[1, 1, 1, 0]]).bool()
    >>> round(float(js_divergence(obs, obs, mask)[0]), 6)
    0.0

Memory: tensors are `[example, group]`; thousands of examples fit in kilobytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.errors import InterpError

__all__ = ["MixingData", "MixingModel", "fit_mixing_model", "js_divergence", "uniform_score"]

Kind = Literal["full", "positional"]


@dataclass
class MixingData:
    """Observed candidate distributions (padded to the largest n) and the mechanism pointers."""

    probs: Float[Tensor, "batch group"]  # rows sum to 1 over the first n[b] entries
    n: Int[Tensor, " batch"]
    positional: Int[Tensor, " batch"]
    lexical: Int[Tensor, " batch"]
    reflexive: Int[Tensor, " batch"]

    @property
    def mask(self) -> Bool[Tensor, "batch group"]:
        return torch.arange(self.probs.shape[1])[None, :] < self.n[:, None]

    def subset(self, index: Tensor) -> MixingData:
        return MixingData(self.probs[index], self.n[index], self.positional[index], self.lexical[index],
                          self.reflexive[index])

    def __len__(self) -> int:
        return self.probs.shape[0]


def js_divergence(p: Float[Tensor, "batch group"], q: Float[Tensor, "batch group"],
                  mask: Bool[Tensor, "batch group"]) -> Float[Tensor, " batch"]:
    """Jensen–Shannon divergence in bits (0 = identical, 1 = disjoint) per row, over masked entries."""
    p, q = p * mask, q * mask
    m = 0.5 * (p + q)

    def kl(a: Tensor) -> Tensor:
        return torch.where(a > 0, a * (torch.log(a.clamp_min(1e-30)) - torch.log(m.clamp_min(1e-30))), 0.0).sum(-1)

    return (0.5 * kl(p) + 0.5 * kl(q)) / math.log(2)


class MixingModel(torch.nn.Module):
    """Gaussian positional term + lexical and reflexive indicators, softmaxed over n candidates."""

    def __init__(self, kind: Kind = "full"):
        super().__init__()
        if kind not in ("full", "positional"):
            raise InterpError(f"unknown mixing model kind {kind!r}: use 'full' or 'positional'.")
        self.kind = kind
        self.w_pos = torch.nn.Parameter(torch.tensor(4.0))
        self.w_lex = torch.nn.Parameter(torch.tensor(1.0 if kind == "full" else 0.0), requires_grad=kind == "full")
        self.w_ref = torch.nn.Parameter(torch.tensor(1.0 if kind == "full" else 0.0), requires_grad=kind == "full")
        self.sigma_coef = torch.nn.Parameter(torch.tensor([0.0, 0.0, 0.0]))  # softplus(a + b x + c x^2)

    def sigma(self, x: Float[Tensor, "*any"]) -> Float[Tensor, "*any"]:
        a, b, c = self.sigma_coef
        return F.softplus(a + b * x + c * x * x) + 0.05

    def forward(self, data: MixingData) -> Float[Tensor, "batch group"]:
        i = torch.arange(data.probs.shape[1], dtype=torch.float32)[None, :]
        p = data.positional.float()[:, None]
        x = p / (data.n.float()[:, None] - 1).clamp_min(1)
        bump = torch.exp(-((i - p) ** 2) / (2 * self.sigma(x) ** 2))
        logits = self.w_pos * bump
        logits = logits + self.w_lex * F.one_hot(data.lexical, data.probs.shape[1])
        logits = logits + self.w_ref * F.one_hot(data.reflexive, data.probs.shape[1])
        return torch.softmax(logits.masked_fill(~data.mask, float("-inf")), dim=-1)

    def score(self, data: MixingData) -> float:
        """Mean 1 - JS (bits) between this model's and the observed distributions."""
        with torch.no_grad():
            return float(1 - js_divergence(self(data), data.probs, data.mask).mean())

    def params(self) -> dict[str, float | list[float]]:
        with torch.no_grad():
            return {"w_pos": float(self.w_pos), "w_lex": float(self.w_lex), "w_ref": float(self.w_ref),
                    "sigma_coef": [float(v) for v in self.sigma_coef]}


def uniform_score(data: MixingData) -> float:
    """1 - JS of the uniform distribution over the n candidates."""
    uniform = data.mask.float() / data.n[:, None].float()
    return float(1 - js_divergence(uniform, data.probs, data.mask).mean())


def fit_mixing_model(data: MixingData, kind: Kind = "full", *, steps: int = 400, lr: float = 0.05,
                     restarts: int = 3, seed: int = 0) -> MixingModel:
    """Fit by Adam on the mean JS divergence; the best of `restarts` random initialisations wins.

    >>> # model = fit_mixing_model(train); model.score(heldout)
    """
    if len(data) == 0:
        raise InterpError("no examples to fit the mixing model on: sample more counterfactuals.")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: intra-op threads only add barrier waits (60 ms per softmax seen)
    try:
        return _fit(data, kind, steps, lr, restarts, seed)
    finally:
        torch.set_num_threads(threads)


def _fit(data: MixingData, kind: Kind, steps: int, lr: float, restarts: int, seed: int) -> MixingModel:
    gen = torch.Generator().manual_seed(seed)
    best, best_loss = None, float("inf")
    for _ in range(restarts):
        model = MixingModel(kind)
        with torch.no_grad():
            model.w_pos.add_(torch.randn((), generator=gen))
            model.sigma_coef.add_(0.5 * torch.randn(3, generator=gen))
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
        with torch.enable_grad():
            for _ in range(steps):
                loss = js_divergence(model(data), data.probs, data.mask).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        final = 1 - model.score(data)
        if final < best_loss:
            best, best_loss = model, final
    return best
