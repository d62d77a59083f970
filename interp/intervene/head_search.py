"""Which heads to calibrate: per-head screening on a dev split, then greedy set building, on a budget.

ACT's official recipe calibrates each head alone on a dev set and keeps those that help, by hand.
Here the search is automatic and counts its cost in *evaluations* (one evaluation = scoring the dev
split once under some head set):

1. baseline: the uncalibrated model (1 evaluation);
2. screening: each candidate head calibrated alone. When the budget cannot afford every head,
   whole layers are screened first and heads are screened in the most promising layers;
3. greedy: heads that helped alone, best first, are added one at a time and kept only if the dev
   score of the growing set improves, until the budget or `max_heads` is reached.

Candidates skip the first two and the last layer by default, as the official code does
(`skip_first`, `skip_last`, or an explicit `layers` list). Scores compare as tuples, e.g.
(accuracy, mean gold log-prob): the second entry breaks the ties a small dev split produces.

    >>> def score(heads):                       # a toy objective: heads (3, 1) and (4, 0) help
    ...     return (len({(3, 1), (4, 0)} & set(heads)) - 0.1 * len(set(heads) - {(3, 1), (4, 0)}),)
    >>> r = search_heads(score, n_layers=6, n_heads=2, config=SearchConfig(budget=30), progress=False)
    >>> r.heads
    [(3, 1), (4, 0)]
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from interp.errors import InterpError
from interp.parallel import check_same, check_work, map_units
from interp.progress import bar as progress_bar

Head = tuple[int, int]
Score = tuple[float, ...]


@dataclass
class SearchConfig:
    """Search settings. `budget` counts dev evaluations, baseline included."""

    budget: int = 120
    max_heads: int = 16
    skip_first: int = 2
    skip_last: int = 1
    layers: Sequence[int] | None = None  # explicit candidate layers (overrides skip_*)
    min_gain: float = 0.0  # a head screens in when its first score component beats baseline by more

    def candidate_layers(self, n_layers: int) -> list[int]:
        if self.layers is not None:
            bad = [layer for layer in self.layers if not 0 <= layer < n_layers]
            if bad:
                raise InterpError(f"search layers {bad} are out of range: the model has layers "
                                  f"0..{n_layers - 1}.")
            return sorted(set(self.layers))
        if self.skip_first < 0 or self.skip_last < 0:
            raise InterpError("skip_first and skip_last must be >= 0.")
        return list(range(self.skip_first, n_layers - self.skip_last))


@dataclass
class SearchResult:
    heads: list[Head]
    baseline: Score
    score: Score
    screened: dict[str, Score] = field(default_factory=dict)  # "layer:head" or "layer:*" -> score alone
    history: list[dict] = field(default_factory=list)  # every evaluation, in order
    evaluations: int = 0

    def to_json(self) -> dict:
        return {"heads": [list(h) for h in self.heads], "baseline": list(self.baseline),
                "score": list(self.score), "screened": {k: list(v) for k, v in self.screened.items()},
                "evaluations": self.evaluations, "history": self.history}


def search_heads(score: Callable[[list[Head]], Score], *, n_layers: int, n_heads: int,
                 config: SearchConfig | None = None, progress: bool = True) -> SearchResult:
    """Search a head set maximising `score(heads)` (a tuple, higher is better) within `config.budget` calls.

    Under torchrun (`interp.parallel.init()` first) the screening evaluations are dealt to the ranks
    (`score` must be the same pure function on every rank); the greedy stage runs on every rank.
    """
    check_same({"n_layers": n_layers, "n_heads": n_heads, "config": repr(config)}, "head-search settings")
    config = config or SearchConfig()
    layers = config.candidate_layers(n_layers)
    if not layers:
        raise InterpError(f"no candidate layers: {n_layers} layers minus skip_first={config.skip_first} and "
                          f"skip_last={config.skip_last}; lower them or pass layers=[...].")
    if config.budget < 2 or config.max_heads < 1:
        raise InterpError("a head search needs budget >= 2 evaluations and max_heads >= 1.")
    result = SearchResult([], (), ())
    with progress_bar(enabled=progress, transient=True) as bar:
        task = bar.add_task("head search", total=config.budget)

        def note(heads: list[Head], stage: str, s: Score) -> Score:
            result.evaluations += 1
            result.history.append({"stage": stage, "heads": [list(h) for h in heads], "score": list(s)})
            bar.update(task, advance=1, description=f"head search: {stage}")
            return s

        def run(heads: list[Head], stage: str) -> Score:
            return note(heads, stage, tuple(float(x) for x in score(list(heads))))

        def run_many(sets: list[list[Head]], stage: str) -> list[Score]:
            """Independent evaluations, dealt to the torchrun ranks (each computed as in one process)."""
            scores = map_units(lambda heads: tuple(float(x) for x in score(list(heads))), sets)
            return [note(heads, stage, s) for heads, s in zip(sets, scores)]

        result.baseline = result.score = run([], "baseline")
        heads = [(layer, h) for layer in layers for h in range(n_heads)]
        check_work(len(heads), "candidate heads", "widen the candidate layers")
        reserve = min(config.max_heads, len(heads))  # evaluations kept for the greedy stage
        left = config.budget - result.evaluations - reserve
        if len(heads) > left:  # coarse first: whole layers, then heads of the best layers
            by_layer = {}
            n = min(len(layers), max(1, left // 2))  # half the screening budget on layers, half on heads
            if n < len(layers):  # an evenly spread subset of layers
                layers = sorted({layers[round(i * (len(layers) - 1) / max(n - 1, 1))] for i in range(n)})
            sets = [[(layer, h) for h in range(n_heads)] for layer in layers]
            for layer, s in zip(layers, run_many(sets, "screen layers")):
                by_layer[layer] = result.screened[f"{layer}:*"] = s
            order = sorted(by_layer, key=lambda lay: by_layer[lay], reverse=True)
            heads = [(layer, h) for layer in order for h in range(n_heads)]
        alone = {}
        heads = heads[: max(0, config.budget - min(reserve, 1) - result.evaluations)]
        for head, s in zip(heads, run_many([[head] for head in heads], "screen heads")):
            alone[head] = result.screened[f"{head[0]}:{head[1]}"] = s
        helpful = sorted((h for h, s in alone.items()
                          if s > result.baseline and s[0] - result.baseline[0] >= config.min_gain),
                         key=lambda h: alone[h], reverse=True)
        for head in helpful:
            if result.evaluations >= config.budget or len(result.heads) >= config.max_heads:
                break
            trial = result.heads + [head]
            s = alone[head] if not result.heads else run(trial, "greedy")
            if s > result.score:
                result.heads, result.score = trial, s
    return result


__all__ = ["SearchConfig", "SearchResult", "search_heads"]
