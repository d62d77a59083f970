"""Retrieval heads (Wu et al. 2024): the heads that copy a fact out of a long context.

Definition (the paper's, as its official code computes it): run needle-in-a-haystack trials with
greedy decoding. At every decoding step, for every head, take the argmax key of the head's
attention on the row that produces the next token; if that key lies in the needle's answer span
and holds the same token the model just generated, the head copied it: add `1 / len(span)`.
Only trials whose answer is recalled (ROUGE-1 recall > 0.5) count; a head's score is its mean over
the counted trials.

How it is computed here: prefill and decoding run through SDPA; a tiny probe (`DecodeArgmax`) keeps,
per forward pass, only the argmax key of the newest query row of every head (`batch x head`
integers per layer and step), never a full pattern. Each prompt is prefilled on its own, starting
from the cached haystack it shares with the previous trial; decoding runs many trials per batch
(the runner: `interp.analyze.trials`; its decoding: `interp.analyze.decoding`).

    >>> import interp
    >>> from interp.tasks.niah import NiahConfig, build_trials
    >>> m = interp.load("smollm2")                                                   # doctest: +SKIP
    >>> trials = build_trials(m.tokenizer, NiahConfig(lengths=(300, 500)))          # doctest: +SKIP
    >>> scores = retrieval_scores(m, trials, batch_size=8, checkpoint="runs/trials.jsonl")  # doctest: +SKIP
    >>> scores.top(5), scores.fraction_over(0.1), scores.success_rate                 # doctest: +SKIP
    >>> scores.save("retrieval_heads.json")  # official {"layer-head": [...]} format  # doctest: +SKIP

Memory: one batch of prompts plus its KV cache; the argmax record is `steps x layer x batch x head`
integers. An interrupted scan resumes from `checkpoint` (one JSON line per finished trial).
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from interp.analyze.decoding import PrefixCache
from interp.analyze.trials import (  # the runner; re-exported here, where the score is defined
    RECALL_THRESHOLD,
    DecodeArgmax,
    TrialResult,
    copy_hits,
    prefix_order,
    run_trials,
)
from interp.axes import head_label, parse_head
from interp.errors import InterpError
from interp.models.model import as_model
from interp.parallel import check_same, check_work, is_main, map_units, on_main
from interp.progress import bar as progress_bar
from interp.tasks.niah import Trial


@dataclass
class RetrievalScores:
    """Per-head retrieval scores over the counted (recalled) trials.

    `per_trial[t, layer, head]` is trial `trial_ids[t]`'s score; `mean` averages over trials.
    `n_trials` counts every trial run, recalled or not.
    """

    per_trial: Float[Tensor, "trial layer head"]
    trial_ids: list[str]
    n_trials: int
    model: str = ""

    @property
    def mean(self) -> Float[Tensor, "layer head"]:
        if not len(self.trial_ids):
            return torch.zeros(self.per_trial.shape[1:])
        return self.per_trial.mean(0)

    @property
    def n_layers(self) -> int:
        return self.per_trial.shape[1]

    @property
    def n_heads(self) -> int:
        return self.per_trial.shape[2]

    @property
    def success_rate(self) -> float:
        return len(self.trial_ids) / self.n_trials if self.n_trials else 0.0

    def fraction_over(self, threshold: float = 0.1) -> float:
        """Fraction of all heads whose mean score exceeds `threshold` (the paper: typically < 5% over 0.1)."""
        return (self.mean > threshold).float().mean().item()

    def top(self, k: int = 10) -> list[tuple[int, int, float]]:
        """The `k` highest-scoring heads as `(layer, head, score)`, best first (ties: lower layer, head)."""
        n = self.n_layers * self.n_heads
        if not 0 <= k <= n:
            raise InterpError(
                f"top-k {k} is out of range: the model has {n} heads ({self.n_layers} layers x "
                f"{self.n_heads} heads); choose k in 0..{n}."
            )
        flat = self.mean.flatten()
        order = sorted(range(n), key=lambda i: (-flat[i].item(), i))[:k]
        return [(i // self.n_heads, i % self.n_heads, flat[i].item()) for i in order]

    def to_json(self, official: bool = False) -> dict[str, list[float]]:
        """The score-file format: `{"L.H": [score per counted trial, ...]}` (head labels, `interp.axes`);
        `official=True` spells keys `"L-H"`, as the Retrieval Head paper's code reads them."""
        return {
            (f"{l}-{h}" if official else head_label(l, h)): self.per_trial[:, l, h].tolist()
            for l in range(self.n_layers)
            for h in range(self.n_heads)
        }

    def save(self, path: str | Path, official: bool = False) -> None:
        Path(path).write_text(json.dumps(self.to_json(official)))

    @classmethod
    def from_json(
        cls,
        data: dict | str | Path,
        *,
        n_layers: int | None = None,
        n_heads: int | None = None,
        model: str = "",
    ) -> "RetrievalScores":
        """Read an official score file (or its dict). Sizes default to the largest indices found."""
        if not isinstance(data, dict):
            path = Path(data)
            if not path.is_file():
                raise InterpError(
                    f"retrieval score file {path} does not exist; write one with `RetrievalScores.save` "
                    f'or pass a released `{{"layer-head": [scores]}}` JSON file.'
                )
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise InterpError(f"{path} is not a retrieval score file: not valid JSON ({err}).") from None
        if not isinstance(data, dict) or not data:
            raise InterpError('not a retrieval score file: expected a non-empty {"L.H": [scores]} object.')
        try:
            keys = {parse_head(k): v for k, v in data.items()}  # "L.H", or the official "L-H"
            if any(len(k) != 2 or min(k) < 0 for k in keys) or not all(
                    isinstance(v, list) and all(isinstance(x, (int, float)) for x in v)
                    for v in keys.values()):
                raise ValueError("keys 'L.H', values lists of numbers")
        except (ValueError, AttributeError, InterpError) as err:
            raise InterpError(
                "not a retrieval score file: keys must be head labels 'L.H' (or 'L-H') with lists of scores "
                f"({err})."
            ) from None
        lengths = {len(v) for v in keys.values()}
        if len(lengths) > 1:
            raise InterpError(
                f"score lists have different lengths {sorted(lengths)}; every head needs one score "
                f"per counted trial."
            )
        n_layers = n_layers or 1 + max(l for l, _ in keys)
        n_heads = n_heads or 1 + max(h for _, h in keys)
        n = lengths.pop() if lengths else 0
        per_trial = torch.zeros(n, n_layers, n_heads)
        for (l, h), v in keys.items():
            if l >= n_layers or h >= n_heads:
                raise InterpError(
                    f"score file names head {l}-{h}, outside {n_layers} layers x {n_heads} heads."
                )
            per_trial[:, l, h] = torch.tensor(v, dtype=torch.float32)
        return cls(per_trial, [f"trial{i}" for i in range(n)], n, model)

    def figure(self, title: str | None = None):
        """A plotly layer x head heatmap of the mean scores."""
        import plotly.graph_objects as go

        fig = go.Figure(
            go.Heatmap(
                z=self.mean.numpy(),
                colorscale="Viridis",
                colorbar={"title": "score"},
                hovertemplate="layer %{y} head %{x}: %{z:.3f}<extra></extra>",
            )
        )
        fig.update_layout(
            title=title
            or f"Retrieval scores {self.model} ({len(self.trial_ids)}/{self.n_trials} trials recalled)",
            xaxis_title="head",
            yaxis_title="layer",
        )
        return fig


def retrieval_scores(
    model,
    trials: Sequence[Trial],
    *,
    batch_size: int = 8,
    max_new_tokens: int = 8,
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> RetrievalScores:
    """Score every head over `trials` (see the module docstring).

    Under torchrun (`interp.parallel.init()` first) the batches of trials (`batch_size` each, in
    `prefix_order`) are dealt to the ranks; the scores equal one process's; rank 0 alone writes
    `checkpoint` and shows progress.

    `checkpoint`: a JSONL file; finished trials are appended as they complete and skipped on a
    rerun, so an interrupted scan resumes instead of starting over.
    """
    m = as_model(model)
    if not trials:
        raise InterpError("no trials to score; build some with interp.tasks.niah.build_trials.")
    check_same({"trials": [t.id for t in trials], "batch_size": batch_size, "max_new_tokens": max_new_tokens,
                "model": m.name}, "trials or retrieval settings")
    done = on_main(lambda: load_checkpoint(checkpoint) if checkpoint else {})
    order = prefix_order([t for t in trials if t.id not in done])
    groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if groups:
        check_work(len(groups), f"batches of {batch_size} trials", "lower batch_size")
    sink = _open_append(checkpoint) if checkpoint and is_main() else None

    def unit(group: Sequence[Trial]) -> list[TrialResult]:
        # a fresh prefix cache per batch: each batch is computed alike alone, resumed, or on any rank
        return [r for results in run_trials(m, group, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                            score=True, progress=False, prefix=PrefixCache())
                                            for r in results]

    try:
        with progress_bar(enabled=progress and is_main()) as bar:
            task = bar.add_task("retrieval scan", total=len(order))

            def finished(i: int, results: list[TrialResult]) -> None:
                for r in results:
                    done[r.id] = r
                    if sink:
                        sink.write(json.dumps(r.to_json()) + "\n")
                if sink:
                    sink.flush()
                bar.advance(task, len(results))

            map_units(unit, groups, on_done=finished)
    finally:
        if sink:
            sink.close()
    return scores_from_results([done[t.id] for t in trials], m.adapter.n_layers(), m.adapter.n_heads, m.name)


def scores_from_results(
    results: Sequence[TrialResult], n_layers: int, n_heads: int, model: str = ""
) -> RetrievalScores:
    counted = [r for r in results if r.recalled]
    per_trial = torch.stack([r.scores for r in counted]) if counted else torch.zeros(0, n_layers, n_heads)
    if per_trial.shape[1:] != (n_layers, n_heads):
        raise InterpError(
            f"saved trial scores have shape {tuple(per_trial.shape[1:])}, not ({n_layers}, {n_heads}): "
            f"the checkpoint belongs to another model; use a fresh checkpoint file."
        )
    return RetrievalScores(per_trial, [r.id for r in counted], len(results), model)


def _open_append(path: str | Path):
    """Open a JSONL file for appending, finishing a line torn by an interruption first."""
    path = Path(path)
    torn = path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n")
    sink = open(path, "a")
    if torn:
        sink.write("\n")
    return sink


def load_checkpoint(path: str | Path) -> dict[str, TrialResult]:
    """Finished trials from a scan's JSONL checkpoint (missing file: none; a torn last line is ignored)."""
    path = Path(path)
    done = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line being written when the scan was interrupted
        done[r["id"]] = TrialResult(r["id"], r["output"], r["recall"], torch.tensor(r["scores"]))
    return done


__all__ = [
    "RECALL_THRESHOLD",
    "DecodeArgmax",
    "RetrievalScores",
    "TrialResult",
    "copy_hits",
    "load_checkpoint",
    "prefix_order",
    "retrieval_scores",
    "run_trials",
    "scores_from_results",
]
