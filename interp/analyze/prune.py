"""The causal test of retrieval heads: prune them and watch needle-in-a-haystack recall fail.

For each K: ablate the top-K retrieval heads, then K heads drawn at random from the heads that are
*not* retrieval heads (`draws` times), and measure NIAH accuracy (fraction of trials recalled,
ROUGE-1 recall > 0.5) and perplexity on held-out text. The random draws exclude every head in the
top max(K) and every head scoring over `threshold` — enforced, and checked — unlike the official
code, whose exclusion never excludes.

    >>> scores = RetrievalScores.from_json("runs/retrieval_heads.json")        # doctest: +SKIP
    >>> result = prune_experiment(m, scores, trials, heldout, PruneConfig(top_k=(5, 10)))  # doctest: +SKIP
    >>> print(result.table()); result.save("runs/prune")                       # doctest: +SKIP

Cost: `1 + len(top_k) x (1 + draws)` NIAH runs over `trials`, plus as many perplexity passes; on a
CPU keep trials few and short (tens of trials of ~300 tokens).
"""

import json
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from jaxtyping import Int
from torch import Tensor

from interp.analyze.retrieval import RetrievalScores, run_trials
from interp.capture import capture
from interp.errors import InterpError
from interp.intervene.ablate import HeadAblation
from interp.models.model import as_model
from interp.parallel import check_same, check_work, is_main, map_units
from interp.tasks.niah import Trial

Head = tuple[int, int]


@dataclass
class PruneConfig:
    """What to prune and how to measure it (see the module docstring)."""

    top_k: Sequence[int] = (5, 10, 20)
    random_draws: int = 3
    seed: int = 0
    mode: str = "uniform"  # as the official code masks heads; or "zero" / "mean"
    phase: str = "both"
    threshold: float = 0.1  # heads scoring over this are retrieval heads too (never drawn at random)
    batch_size: int = 8
    max_new_tokens: int = 8
    ppl_window: int = 256  # tokens per held-out window
    ppl_windows: int = 8


@dataclass
class PruneRow:
    condition: str  # "none" | "top" | "random"
    k: int
    draw: int
    heads: list[Head]
    niah_accuracy: float
    mean_recall: float
    perplexity: float


@dataclass
class PruneResult:
    rows: list[PruneRow]
    n_trials: int
    config: PruneConfig = field(default_factory=PruneConfig)
    model: str = ""

    def summary(self) -> list[dict]:
        """One line per K: top-K accuracy and perplexity vs the random draws' mean (min..max)."""
        base = next(r for r in self.rows if r.condition == "none")
        out = [
            {
                "k": 0,
                "top_acc": base.niah_accuracy,
                "random_acc": base.niah_accuracy,
                "random_min": None,
                "random_max": None,
                "top_ppl": base.perplexity,
                "random_ppl": base.perplexity,
            }
        ]
        for k in sorted({r.k for r in self.rows if r.k}):
            top = next(r for r in self.rows if r.condition == "top" and r.k == k)
            rand = [r for r in self.rows if r.condition == "random" and r.k == k]
            accs = [r.niah_accuracy for r in rand]
            out.append(
                {
                    "k": k,
                    "top_acc": top.niah_accuracy,
                    "random_acc": sum(accs) / len(accs),
                    "random_min": min(accs),
                    "random_max": max(accs),
                    "top_ppl": top.perplexity,
                    "random_ppl": sum(r.perplexity for r in rand) / len(rand),
                }
            )
        return out

    def table(self) -> str:
        """A markdown table of `summary()`."""
        lines = [
            f"| K | NIAH acc, top-K ablated | NIAH acc, K random "
            f"(mean, min-max of {self.config.random_draws}) "
            f"| ppl, top-K | ppl, random (mean) |",
            "|---|---|---|---|---|",
        ]
        for s in self.summary():
            spread = "" if s["random_min"] is None else f" ({s['random_min']:.2f}-{s['random_max']:.2f})"
            lines.append(
                f"| {s['k']} | {s['top_acc']:.2f} | {s['random_acc']:.2f}{spread} | {s['top_ppl']:.2f} "
                f"| {s['random_ppl']:.2f} |"
            )
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "n_trials": self.n_trials,
            "config": asdict(self.config),
            "rows": [asdict(r) for r in self.rows],
            "summary": self.summary(),
        }

    def figure(self):
        """NIAH accuracy vs K (top-K vs random, with the draws' range) and perplexity, side by side."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        s = self.summary()
        ks = [x["k"] for x in s]
        fig = make_subplots(rows=1, cols=2, subplot_titles=("NIAH accuracy", "held-out perplexity"))
        err = dict(
            type="data",
            symmetric=False,
            array=[0 if x["random_max"] is None else x["random_max"] - x["random_acc"] for x in s],
            arrayminus=[0 if x["random_min"] is None else x["random_acc"] - x["random_min"] for x in s],
        )
        fig.add_trace(
            go.Scatter(
                x=ks, y=[x["top_acc"] for x in s], name="top-K retrieval heads ablated", mode="lines+markers"
            ),
            1,
            1,
        )
        fig.add_trace(
            go.Scatter(
                x=ks,
                y=[x["random_acc"] for x in s],
                name="K random non-retrieval heads",
                mode="lines+markers",
                error_y=err,
            ),
            1,
            1,
        )
        fig.add_trace(
            go.Scatter(x=ks, y=[x["top_ppl"] for x in s], name="ppl, top-K", mode="lines+markers"), 1, 2
        )
        fig.add_trace(
            go.Scatter(x=ks, y=[x["random_ppl"] for x in s], name="ppl, random", mode="lines+markers"), 1, 2
        )
        fig.update_xaxes(title_text="K heads ablated")
        fig.update_layout(
            title=f"Pruning retrieval heads ({self.model}, {self.n_trials} NIAH trials, "
            f"{self.config.mode} ablation)"
        )
        return fig

    def save(self, out_dir: str | Path) -> None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "prune.json").write_text(json.dumps(self.to_json(), indent=1))
        (out / "prune.md").write_text(self.table() + "\n")
        self.figure().write_html(out / "prune.html", include_plotlyjs=True)


def retrieval_set(scores: RetrievalScores, k: int, threshold: float) -> set[Head]:
    """The heads random draws must avoid: the top `k` and every head scoring over `threshold`."""
    top = {(l, h) for l, h, _ in scores.top(k)}
    over = {tuple(x) for x in torch.nonzero(scores.mean > threshold).tolist()}
    return top | over


def draw_random_heads(
    n_layers: int, n_heads: int, exclude: set[Head], k: int, rng: random.Random
) -> list[Head]:
    """`k` distinct heads, none in `exclude`.

    >>> draw_random_heads(2, 2, {(0, 0), (1, 1)}, 2, random.Random(0))
    [(0, 1), (1, 0)]
    """
    pool = [(l, h) for l in range(n_layers) for h in range(n_heads) if (l, h) not in exclude]
    if k > len(pool):
        raise InterpError(
            f"cannot draw {k} random heads: only {len(pool)} heads are not retrieval heads. "
            f"Lower --top-k or raise the threshold."
        )
    heads = sorted(rng.sample(pool, k))
    assert not set(heads) & exclude  # the exclusion the official code forgets
    return heads


def check_top_k(top_k: Sequence[int], n_total: int) -> list[int]:
    ks = sorted({int(k) for k in top_k})
    bad = [k for k in ks if not 1 <= k <= n_total]
    if bad:
        raise InterpError(
            f"--top-k {bad[0]} is out of range: the model has {n_total} heads; choose K in 1..{n_total}."
        )
    return ks


def _editors(heads: Sequence[Head], config: PruneConfig, means) -> list[HeadAblation]:
    return [HeadAblation(list(heads), mode=config.mode, phase=config.phase, means=means)] if heads else []


def niah_accuracy(
    model,
    trials: Sequence[Trial],
    heads: Sequence[Head],
    config: PruneConfig,
    progress: bool | str = False,
    means=None,
) -> tuple[float, float]:
    """(fraction of trials recalled, mean ROUGE-1 recall) with `heads` ablated."""
    edits = _editors(heads, config, means)
    results = [
        r
        for batch in run_trials(
            model,
            trials,
            batch_size=config.batch_size,
            max_new_tokens=config.max_new_tokens,
            edits=edits,
            progress=progress,
        )
        for r in batch
    ]
    return sum(r.recalled for r in results) / len(results), sum(r.recall for r in results) / len(results)


@torch.no_grad()
def perplexity(
    model, windows: Int[Tensor, "batch pos"], heads: Sequence[Head], config: PruneConfig, means=None
) -> float:
    """exp(mean next-token loss) over `windows` (unpadded rows of held-out token ids) with `heads` ablated."""
    m = as_model(model)
    edits = _editors(heads, config, means)
    total, count = 0.0, 0
    for i in range(0, len(windows), config.batch_size):
        ids = windows[i : i + config.batch_size].to(m.device)
        with capture(m, edits=edits):
            logits = m.hf(input_ids=ids).logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
        )
        total, count = total + loss.item(), count + ids[:, 1:].numel()
    return math.exp(total / count)


def heldout_windows(tokenizer, text: str, window: int, n: int) -> Int[Tensor, "batch pos"]:
    """`n` consecutive `window`-token rows of `text` (a clear error when the text is too short)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) < window * n:
        raise InterpError(
            f"held-out text has {len(ids)} tokens; {n} windows of {window} need {window * n}. "
            f"Use fewer or shorter windows, or a longer text."
        )
    return torch.tensor(ids[: window * n]).reshape(n, window)


def prune_experiment(
    model,
    scores: RetrievalScores,
    trials: Sequence[Trial],
    heldout: Int[Tensor, "batch pos"],
    config: PruneConfig | None = None,
    progress: bool = True,
    means=None,
) -> PruneResult:
    """Run the experiment (see the module docstring); rows: baseline, then per K top and random draws.

    `means`: per-layer mean head outputs for `mode="mean"` (from `interp.intervene.mean_z`).
    Under torchrun (`interp.parallel.init()` first) the conditions (rows) are dealt to the ranks and
    every rank returns the whole result, equal to one process's.
    """
    m = as_model(model)
    config = config or PruneConfig()
    n_layers, n_heads = m.adapter.n_layers(), m.adapter.n_heads
    if (scores.n_layers, scores.n_heads) != (n_layers, n_heads):
        raise InterpError(
            f"the retrieval scores are for {scores.n_layers} x {scores.n_heads} heads, the model has "
            f"{n_layers} x {n_heads}; score this model first."
        )
    if config.random_draws < 1:
        raise InterpError(f"--random-draws must be >= 1, got {config.random_draws}.")
    ks = check_top_k(config.top_k, n_layers * n_heads)
    exclude = retrieval_set(scores, max(ks), config.threshold)
    rng = random.Random(config.seed)
    plan = [("none", 0, 0, [])]
    for k in ks:
        plan.append(("top", k, 0, [(l, h) for l, h, _ in scores.top(k)]))
        plan += [
            ("random", k, d, draw_random_heads(n_layers, n_heads, exclude, k, rng))
            for d in range(config.random_draws)
        ]
    check_same({"plan": plan, "trials": [t.id for t in trials], "heldout": heldout.tolist(),
                "config": repr(config)},
               "pruning settings")
    check_work(len(plan), "ablation conditions", "use fewer processes")

    def row(i: int) -> PruneRow:  # one condition: NIAH accuracy and perplexity, computed alike on any rank
        condition, k, draw, heads = plan[i]
        label = progress and is_main() and f"[{i + 1}/{len(plan)}] {condition} K={k}" + (
            f" draw {draw}" if condition == "random" else ""
        )
        acc, recall = niah_accuracy(m, trials, heads, config, progress=label, means=means)
        ppl = perplexity(m, heldout, heads, config, means=means)
        return PruneRow(condition, k, draw, heads, acc, recall, ppl)

    rows = map_units(row, range(len(plan)))
    return PruneResult(rows, len(trials), config, m.name)


__all__ = [
    "PruneConfig",
    "PruneResult",
    "PruneRow",
    "check_top_k",
    "draw_random_heads",
    "heldout_windows",
    "niah_accuracy",
    "perplexity",
    "prune_experiment",
    "retrieval_set",
]
