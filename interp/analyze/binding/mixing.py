"""The causal mixing model of binding retrieval, fitted by Jensen–Shannon divergence, per term subset.

After an interchange intervention (see `interp.analyze.binding`) the model's distribution over the
`n` candidate answers is explained as a softmax over logits that mix three mechanisms:

    logit(i) = w_pos * exp(-(i - p)^2 / (2 sigma(x_p)^2)) + w_lex * [i == r] + w_ref * [i == s]

with `p`, `r`, `s` the groups the positional, lexical and reflexive mechanisms point to and
`x_p = p / (n - 1)` the relative position of `p`. The positional term is a Gaussian bump whose
width `sigma` is a quadratic (through softplus) in the relative position, so it can be sharp at
the edges and blurred in the middle (the U-shape). Parameters are shared across n.

Any subset of the three terms can be fitted (`MixingModel(terms=("lexical",))`; no term at all is
the uniform distribution). The fit minimises the mean JS divergence (bits, so 0..1) between
modelled and observed distributions on a train split; `score` reports 1 - JS. `compare_terms` fits
all eight subsets, scores each held-out prompt, bootstraps the mean over prompts and tests, for each
term, whether dropping it from the full model lowers the held-out score (a paired bootstrap).

Example:
    >>> import torch
    >>> obs = torch.tensor([[0.7, 0.2, 0.1, 0.0]]); mask = torch.tensor([[1, 1, 1, 0]]).bool()
    >>> round(float(js_divergence(obs, obs, mask)[0]), 6)
    0.0

Memory: tensors are `[example, group]`; thousands of examples fit in kilobytes.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.errors import InterpError

__all__ = ["SUBSETS", "TERMS", "MixingData", "MixingModel", "TermComparison", "compare_terms",
           "fit_mixing_model", "js_divergence", "uniform_score"]

TERMS = ("positional", "lexical", "reflexive")
SUBSETS: tuple[tuple[str, ...], ...] = tuple(c for k in range(4) for c in itertools.combinations(TERMS, k))
_KINDS = {"full": TERMS, "positional": ("positional",), "uniform": ()}


def _terms(terms: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Normalise `terms`: a kind name ('full', 'positional', 'uniform') or an iterable of TERMS."""
    if isinstance(terms, str):
        if terms not in _KINDS:
            raise InterpError(f"unknown mixing model kind {terms!r}: use 'full', 'positional', 'uniform' "
                              f"or a tuple of terms from {TERMS}.")
        return _KINDS[terms]
    bad = [t for t in terms if t not in TERMS]
    if bad:
        raise InterpError(f"unknown mixing terms {bad}: choose from {', '.join(TERMS)}.")
    return tuple(t for t in TERMS if t in terms)


def subset_name(terms: tuple[str, ...]) -> str:
    """'uniform' for no term, else the terms joined by '+' ('positional+lexical')."""
    return "+".join(terms) if terms else "uniform"


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
        log_ratio = torch.log(a.clamp_min(1e-30)) - torch.log(m.clamp_min(1e-30))
        return torch.where(a > 0, a * log_ratio, 0.0).sum(-1)

    return (0.5 * kl(p) + 0.5 * kl(q)) / math.log(2)


class MixingModel(torch.nn.Module):
    """Gaussian positional term + lexical and reflexive indicators (any subset), softmaxed over n candidates.

    Absent terms are fixed at weight 0; `MixingModel(())` is the uniform distribution.
    """

    def __init__(self, terms: str | tuple[str, ...] = "full"):
        super().__init__()
        self.terms = _terms(terms)
        on = {t: t in self.terms for t in TERMS}
        self.w_pos = torch.nn.Parameter(torch.tensor(4.0 if on["positional"] else 0.0),
                                        requires_grad=on["positional"])
        self.w_lex = torch.nn.Parameter(torch.tensor(1.0 if on["lexical"] else 0.0),
                                        requires_grad=on["lexical"])
        self.w_ref = torch.nn.Parameter(torch.tensor(1.0 if on["reflexive"] else 0.0),
                                        requires_grad=on["reflexive"])
        self.sigma_coef = torch.nn.Parameter(torch.tensor([0.0, 0.0, 0.0]),  # softplus(a + b x + c x^2)
                                             requires_grad=on["positional"])

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def sigma(self, x: Float[Tensor, "*any"]) -> Float[Tensor, "*any"]:
        a, b, c = self.sigma_coef
        return F.softplus(a + b * x + c * x * x) + 0.05

    def forward(self, data: MixingData) -> Float[Tensor, "batch group"]:
        width = data.probs.shape[1]
        logits = torch.zeros(len(data), width)
        if "positional" in self.terms:
            i = torch.arange(width, dtype=torch.float32)[None, :]
            p = data.positional.float()[:, None]
            x = p / (data.n.float()[:, None] - 1).clamp_min(1)
            logits = logits + self.w_pos * torch.exp(-((i - p) ** 2) / (2 * self.sigma(x) ** 2))
        if "lexical" in self.terms:
            logits = logits + self.w_lex * F.one_hot(data.lexical, width)
        if "reflexive" in self.terms:
            logits = logits + self.w_ref * F.one_hot(data.reflexive, width)
        return torch.softmax(logits.masked_fill(~data.mask, float("-inf")), dim=-1)

    def scores(self, data: MixingData) -> Float[Tensor, " batch"]:
        """1 - JS (bits) per example between this model's and the observed distributions."""
        with torch.no_grad():
            return 1 - js_divergence(self(data), data.probs, data.mask)

    def score(self, data: MixingData) -> float:
        """Mean 1 - JS (bits) between this model's and the observed distributions."""
        return float(self.scores(data).mean())

    def params(self) -> dict[str, float | list[float]]:
        with torch.no_grad():
            return {"w_pos": float(self.w_pos), "w_lex": float(self.w_lex), "w_ref": float(self.w_ref),
                    "sigma_coef": [float(v) for v in self.sigma_coef]}


def uniform_score(data: MixingData) -> float:
    """1 - JS of the uniform distribution over the n candidates."""
    uniform = data.mask.float() / data.n[:, None].float()
    return float(1 - js_divergence(uniform, data.probs, data.mask).mean())


def fit_mixing_model(data: MixingData, kind: str | tuple[str, ...] = "full", *, steps: int = 400,
                     lr: float = 0.05, restarts: int = 3, seed: int = 0) -> MixingModel:
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


def _fit(data: MixingData, kind: str | tuple[str, ...], steps: int, lr: float, restarts: int,
         seed: int) -> MixingModel:
    gen = torch.Generator().manual_seed(seed)
    if not _terms(kind):
        return MixingModel(())  # uniform: nothing to fit
    best, best_loss = None, float("inf")
    for _ in range(restarts):
        model = MixingModel(kind)
        if "positional" in model.terms:
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


def _bootstrap(values: Tensor, seed: int, resamples: int) -> tuple[float, float, float]:
    """Mean and 95% percentile-bootstrap interval over examples (scipy.stats.bootstrap)."""
    from scipy.stats import bootstrap

    v = values.double().numpy()
    if len(v) < 2 or float(v.std()) == 0.0:
        return float(v.mean()), float(v.mean()), float(v.mean())
    ci = bootstrap((v,), lambda x, axis: x.mean(axis=axis), n_resamples=resamples, method="percentile",
                   random_state=seed, vectorized=True).confidence_interval
    return float(v.mean()), float(ci.low), float(ci.high)


@dataclass
class TermComparison:
    """Held-out 1 - JS of every term subset (mean, 95% CI) and the drop-one test for each term.

    `rows[name]` = {terms, n_params, train, heldout, low, high, params}; `drop[term]` = the paired
    held-out difference full - (full without term), {mean, low, high, significant, earns_place}.
    A term is `significant` when the whole interval lies above 0 and earns its place when it lies
    above `min_gain` (a gain of 1 - JS worth a parameter). `chosen` is the smallest subset whose
    paired difference to the best subset has an interval reaching below `min_gain` (fewest terms,
    then highest score).
    """

    rows: dict[str, dict]
    drop: dict[str, dict]
    chosen: str
    n_train: int
    n_heldout: int
    min_gain: float = 0.01

    def to_json(self) -> dict:
        return {"rows": self.rows, "drop": self.drop, "chosen": self.chosen, "n_train": self.n_train,
                "n_heldout": self.n_heldout, "min_gain": self.min_gain}

    def table(self) -> str:
        """Markdown: one row per subset, then the drop-one differences."""
        lines = [f"| terms | params | train 1-JS | held-out 1-JS [95% CI] ({self.n_heldout} prompts) |",
                 "|---|---|---|---|"]
        for name, r in self.rows.items():
            mark = "**" if name == self.chosen else ""
            lines.append(f"| {mark}{name}{mark} | {r['n_params']} | {r['train']:.3f} | "
                         f"{r['heldout']:.3f} [{r['low']:.3f}, {r['high']:.3f}] |")
        lines += ["", (f"| dropped from all three | held-out change [95% CI] | significant (CI below 0) | "
                       f"earns its place (CI below -{self.min_gain}) |"), "|---|---|---|---|"]
        for term, d in self.drop.items():
            lines.append(f"| {term} | {-d['mean']:+.3f} [{-d['high']:+.3f}, {-d['low']:+.3f}] | "
                         f"{'yes' if d['significant'] else 'no'} | {'yes' if d['earns_place'] else 'no'} |")
        return "\n".join(lines)


def compare_terms(train: MixingData, heldout: MixingData, *, seed: int = 0, steps: int = 400,
                  restarts: int = 3, resamples: int = 2000, min_gain: float = 0.01) -> TermComparison:
    """Fit every subset of TERMS on `train`, score each `heldout` prompt, bootstrap over prompts.

    >>> # cmp = compare_terms(train, held); print(cmp.table()); cmp.drop["positional"]["earns_place"]
    """
    per_prompt, rows = {}, {}
    for terms in SUBSETS:
        # restarts matter only for the Gaussian's width; the indicator terms alone fit from one start
        tries = restarts if "positional" in terms else 1
        model = fit_mixing_model(train, terms, seed=seed, steps=steps, restarts=tries)
        name = subset_name(terms)
        per_prompt[name] = model.scores(heldout)
        mean, low, high = _bootstrap(per_prompt[name], seed, resamples)
        rows[name] = {"terms": list(terms), "n_params": model.n_params, "train": model.score(train),
                      "heldout": mean, "low": low, "high": high, "params": model.params()}
    full = subset_name(TERMS)
    drop = {}
    for term in TERMS:
        rest = subset_name(tuple(t for t in TERMS if t != term))
        mean, low, high = _bootstrap(per_prompt[full] - per_prompt[rest], seed, resamples)
        drop[term] = {"mean": mean, "low": low, "high": high, "significant": low > 0,
                      "earns_place": low > min_gain}
    best = max(rows, key=lambda k: rows[k]["heldout"])
    ok = [k for k in rows
          if k == best or _bootstrap(per_prompt[best] - per_prompt[k], seed, resamples)[1] <= min_gain]
    chosen = min(ok, key=lambda k: (len(rows[k]["terms"]), -rows[k]["heldout"]))
    return TermComparison(rows, drop, chosen, len(train), len(heldout), min_gain)
