"""How far an attention map agrees with a saliency map over the same inputs.

Both maps are `[step, key]`: one row per generated token (step), one column per *real* input
position (prompt token or encoder frame; padding already cut). Per row we compute

- Pearson and Spearman correlation (the measures of Papi et al. 2025, who report ≈0.45–0.58
  between cross-attention and input saliency in speech-to-text models);
- top-k overlap: |top-k(attention) ∩ top-k(saliency)| / k;
- mass coverage: the share of total saliency that falls in attention's *top region*, the fewest
  positions that hold `region` (default half) of the attention mass;

then average over rows, with a percentile bootstrap confidence interval over rows.

Example:
    >>> a = torch.softmax(torch.randn(8, 50), -1)
    >>> agreement(a, a).pearson.mean
    1.0
    >>> round(agreement(a, a[:, torch.randperm(50)]).pearson.mean, 1)    # doctest: +SKIP
    0.0
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import torch
from jaxtyping import Float
from torch import Tensor

from interp.axes import parse_head
from interp.bootstrap import mean_ci
from interp.errors import InterpError, check_index

Map = Float[Tensor, "step key"]


def pearson(a: Map, b: Map) -> Float[Tensor, " step"]:
    """Row-wise Pearson correlation (0 for a constant row, where it is undefined)."""
    a, b = a.double() - a.double().mean(-1, keepdim=True), b.double() - b.double().mean(-1, keepdim=True)
    denom = a.norm(dim=-1) * b.norm(dim=-1)
    return torch.where(denom > 0, (a * b).sum(-1) / denom.clamp_min(1e-300), torch.zeros_like(denom)).float()


def rank(x: Map) -> Map:
    """Row-wise ranks 1..n, ties sharing their average rank (as `scipy.stats.rankdata`)."""
    x = x.double()
    order = x.argsort(-1)
    sorted_x = x.gather(-1, order)
    n = x.shape[-1]
    pos = torch.arange(1, n + 1, dtype=torch.float64, device=x.device).expand_as(x)
    # average rank within runs of equal values: mean of positions sharing a value
    new_run = torch.ones_like(sorted_x, dtype=torch.bool)
    new_run[..., 1:] = sorted_x[..., 1:] != sorted_x[..., :-1]
    run_id = new_run.long().cumsum(-1) - 1
    run_sum = torch.zeros_like(pos).scatter_add_(-1, run_id, pos)
    run_len = torch.zeros_like(pos).scatter_add_(-1, run_id, torch.ones_like(pos))
    avg = (run_sum / run_len.clamp_min(1)).gather(-1, run_id)
    return torch.empty_like(avg).scatter_(-1, order, avg)


def spearman(a: Map, b: Map) -> Float[Tensor, " step"]:
    """Row-wise Spearman correlation: Pearson of the (tie-averaged) ranks."""
    return pearson(rank(a), rank(b))


def topk_overlap(a: Map, b: Map, k: int) -> Float[Tensor, " step"]:
    """Share of the k largest positions of `a` that are also among the k largest of `b`."""
    k = min(k, a.shape[-1])
    ta = torch.zeros_like(a, dtype=torch.bool).scatter_(-1, a.topk(k, -1).indices, True)
    tb = torch.zeros_like(b, dtype=torch.bool).scatter_(-1, b.topk(k, -1).indices, True)
    return (ta & tb).sum(-1).float() / k


def top_region(attention: Map, region: float = 0.5) -> Float[Tensor, "step key"]:
    """Boolean mask of the fewest positions per row holding at least `region` of the row's mass."""
    p = attention / attention.sum(-1, keepdim=True).clamp_min(1e-30)
    values, order = p.sort(-1, descending=True)
    before = values.cumsum(-1) - values  # mass strictly before each position in sorted order
    keep_sorted = before < region
    return torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)


def mass_coverage(attention: Map, saliency: Map, region: float = 0.5) -> Float[Tensor, " step"]:
    """Share of total saliency inside attention's top region (see `top_region`)."""
    s = saliency / saliency.sum(-1, keepdim=True).clamp_min(1e-30)
    return (s * top_region(attention, region)).sum(-1)


@dataclass
class Estimate:
    """A mean over rows with a bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap(
    values: Float[Tensor, " step"], *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0
) -> Estimate:
    """Mean of `values` with a percentile bootstrap CI (resampling rows with replacement)."""
    v = values.double().flatten()
    if v.numel() == 0:
        raise InterpError("No rows to average: generate at least one token before measuring agreement.")
    lo, hi = mean_ci(v, n_boot=n_boot, level=ci, seed=seed)
    return Estimate(float(round(v.mean().item(), 6)), lo, hi, v.numel())


@dataclass
class Agreement:
    """Agreement between one attention map and one saliency map, averaged over generated tokens."""

    pearson: Estimate
    spearman: Estimate
    topk: Estimate
    coverage: Estimate
    region_size: Estimate  # share of positions in attention's top region (coverage's baseline)
    topk_chance: Estimate  # k / n_inputs: top-k overlap of two unrelated maps, on average
    k: int

    def to_json(self) -> dict:
        return asdict(self)


def _check(attention: Map, saliency: Map) -> None:
    if attention.shape != saliency.shape or attention.ndim != 2:
        raise InterpError(
            f"Attention {tuple(attention.shape)} and saliency {tuple(saliency.shape)} must both be "
            f"[step, key] over the same real input positions."
        )
    if attention.shape[-1] < 2:
        raise InterpError("Agreement needs at least two input positions; give a longer prompt or audio.")


def row_measures(attention: Map, saliency: Map, *, k: int = 5, region: float = 0.5) -> dict[str, Tensor]:
    """Every measure per row (generated token), before averaging: name -> `[step]`."""
    _check(attention, saliency)
    return {
        "pearson": pearson(attention, saliency),
        "spearman": spearman(attention, saliency),
        "topk": topk_overlap(attention, saliency, k),
        "coverage": mass_coverage(attention, saliency, region),
        "region_size": top_region(attention, region).float().mean(-1),
        "topk_chance": torch.full((attention.shape[0],), min(k, attention.shape[-1]) / attention.shape[-1]),
    }


def summarize(rows: list[dict[str, Tensor]], *, k: int = 5, n_boot: int = 1000, seed: int = 0) -> Agreement:
    """Pool per-row measures (e.g. of several prompts) into means with bootstrap CIs."""
    est = {"n_boot": n_boot, "seed": seed}
    return Agreement(**{name: bootstrap(torch.cat([r[name] for r in rows]), **est) for name in rows[0]}, k=k)


def agreement(
    attention: Map, saliency: Map, *, k: int = 5, region: float = 0.5, n_boot: int = 1000, seed: int = 0
) -> Agreement:
    """All agreement measures between `attention` and `saliency` (both `[step, key]`, non-negative).

    Saliency should be a magnitude (e.g. |attribution| summed over features); sign-carrying maps
    make `mass_coverage` meaningless.
    """
    return summarize([row_measures(attention, saliency, k=k, region=region)], k=k, n_boot=n_boot, seed=seed)


# --------------------------------------------------------------------------- attention aggregations

Heads = list[tuple[int, int]]


def aggregate(attention: Float[Tensor, "layer head step key"], how: str | Heads) -> Float[Tensor, "step key"]:
    """Mean of per-head maps: `"all"` heads, `"layer:L"` (one layer's heads), `"head:L.H"` or a list of
    (L, H)."""
    if isinstance(how, str):
        if how == "all":
            return attention.mean((0, 1))
        kind, _, spec = how.partition(":")
        if kind == "layer":
            return attention[int(spec)].mean(0)
        if kind == "head":
            layer, head = parse_head(spec)
            return attention[layer, head]
        raise InterpError(
            f"Unknown aggregation {how!r}; use 'all', 'layer:L', 'head:L.H' or a list of (L, H)."
        )
    if not how:
        raise InterpError("An empty head set: give at least one (layer, head) pair.")
    return torch.stack([attention[layer, head] for layer, head in how]).mean(0)


@dataclass
class SaliencyReport:
    """Saliency and attention over the same real inputs, per generated token, with agreement tables.

    `attention[l, h, t]` is the row that predicted token `t`, cut to the real input and
    renormalised (it sums to 1); `input_mass[l, h, t]` is what it put on the real input before.
    """

    model: str
    method: str
    stack: str
    saliency: Float[Tensor, "step key"]
    attention: Float[Tensor, "layer head step key"]
    input_mass: Float[Tensor, "layer head step"]
    inputs: list[str]
    tokens: list[str]
    head_sets: dict[str, Heads]
    token_ids: list[int] = field(default_factory=list)

    def agreement(self, how: str | Heads = "all", **kw) -> Agreement:
        return agreement(aggregate(self.attention, how), self.saliency, **kw)

    def drop_first(self, n: int = 1) -> SaliencyReport:
        """The same report without the first `n` input positions (e.g. an attention sink), renormalised.

        Decoder-only LMs park most attention on the first token (a sink), which dominates
        correlations; this asks how attention over the *other* tokens agrees with saliency.
        """
        if not 0 <= n <= len(self.inputs) - 2:
            raise InterpError(
                f"Cannot drop {n} of {len(self.inputs)} input positions: at least two must remain."
            )
        kept = self.attention[..., n:]
        share = kept.sum(-1)
        return replace(
            self,
            attention=kept / share.clamp_min(1e-30)[..., None],
            saliency=self.saliency[:, n:],
            input_mass=self.input_mass * share,
            inputs=self.inputs[n:],
        )

    def aggregations(self, per_head: bool = False) -> dict[str, str | Heads]:
        """Row name -> aggregation: all heads, each layer, each head set (and each head if asked)."""
        n_layers, n_heads = self.attention.shape[:2]
        rows: dict[str, str | Heads] = {"all_heads": "all"}
        rows |= {f"layer {i}": f"layer:{i}" for i in range(n_layers)}
        rows |= {f"heads {name}": heads for name, heads in self.head_sets.items()}
        if per_head:
            rows |= {f"head {i}.{j}": f"head:{i}.{j}" for i in range(n_layers) for j in range(n_heads)}
        return rows

    def table(self, *, per_head: bool = False, **kw) -> dict[str, Agreement]:
        """Agreement of the all-heads mean, each layer mean, each head set (and each head if asked)."""
        return {name: self.agreement(how, **kw) for name, how in self.aggregations(per_head).items()}

    def head_grid(self, measure=pearson) -> Float[Tensor, "layer head"]:
        """Mean per-token `measure` for every (layer, head): the layer x head heat map's values."""
        a = self.attention
        return (
            measure(a.flatten(0, 2), self.saliency.repeat(a.shape[0] * a.shape[1], 1))
            .view(a.shape[0], a.shape[1], a.shape[2])
            .mean(-1)
        )

    def to_json(self, **kw) -> dict:
        return {
            "model": self.model,
            "method": self.method,
            "stack": self.stack,
            "tokens": self.tokens,
            "n_inputs": len(self.inputs),
            "head_sets": {k: [list(h) for h in v] for k, v in self.head_sets.items()},
            "input_mass": float(self.input_mass.mean()),
            "agreement": {k: v.to_json() for k, v in self.table(**kw).items()},
            "pearson_by_head": self.head_grid().tolist(),
        }

    def figure_heads(self):
        """Plotly heat map: mean Pearson(attention, saliency) per layer x head."""
        import plotly.graph_objects as go

        grid = self.head_grid()
        fig = go.Figure(
            go.Heatmap(
                z=grid.numpy(),
                zmin=-1,
                zmax=1,
                colorscale="RdBu",
                reversescale=True,
                colorbar={"title": "Pearson"},
            )
        )
        fig.update_layout(
            title=f"{self.model}: {self.stack} attention vs {self.method} saliency",
            xaxis_title="head",
            yaxis_title="layer",
        )
        return fig

    def figure_token(self, step: int = 0, how: str | Heads = "all"):
        """Plotly: attention (aggregated by `how`) and saliency of one generated token, side by side."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        step = check_index("step", step, len(self.tokens), where="the generated tokens")
        att = aggregate(self.attention, how)[step]
        sal = self.saliency[step] / self.saliency[step].sum().clamp_min(1e-30)
        fig = make_subplots(
            rows=2,
            cols=1,
            shared_xaxes=True,
            subplot_titles=(
                f"attention ({how if isinstance(how, str) else 'head set'})",
                f"{self.method} saliency (share)",
            ),
        )
        x = list(range(len(self.inputs)))
        fig.add_trace(go.Bar(x=x, y=att.numpy(), name="attention"), row=1, col=1)
        fig.add_trace(go.Bar(x=x, y=sal.numpy(), name="saliency"), row=2, col=1)
        fig.update_xaxes(
            tickvals=x if len(x) <= 80 else None, ticktext=self.inputs if len(x) <= 80 else None, row=2, col=1
        )
        fig.update_layout(title=f"token {step}: {self.tokens[step]!r}", showlegend=False)
        return fig


def pooled_table(
    reports: list[SaliencyReport],
    *,
    per_head: bool = False,
    k: int = 5,
    region: float = 0.5,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Agreement]:
    """`SaliencyReport.table` over several inputs at once: rows of all reports pooled per aggregation."""
    keys = reports[0].aggregations(per_head)
    return {
        name: summarize(
            [row_measures(aggregate(r.attention, how), r.saliency, k=k, region=region) for r in reports],
            k=k,
            n_boot=n_boot,
            seed=seed,
        )
        for name, how in keys.items()
    }


def pooled_head_grid(reports: list[SaliencyReport]) -> Float[Tensor, "layer head"]:
    """Mean per-token Pearson per (layer, head) over the generated tokens of all reports."""
    steps = torch.tensor([len(r.tokens) for r in reports], dtype=torch.float32)
    grids = torch.stack([r.head_grid() for r in reports])
    return (grids * steps[:, None, None]).sum(0) / steps.sum()


__all__ = [
    "Agreement",
    "Estimate",
    "SaliencyReport",
    "aggregate",
    "agreement",
    "bootstrap",
    "mass_coverage",
    "pearson",
    "pooled_head_grid",
    "pooled_table",
    "rank",
    "row_measures",
    "spearman",
    "summarize",
    "top_region",
    "topk_overlap",
]
