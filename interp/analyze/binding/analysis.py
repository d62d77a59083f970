"""The whole binding analysis: accuracy, layer sweep, shares with intervals, and the term comparison.

For each counterfactual pair from `interp.tasks.binding` the residual stream entering layer `L` at
the last token of the original prompt is replaced by the counterfactual's (`patching`), and the
winner among the `n` candidates is labelled (`sweep`). A layer sweep finds where binding is read;
at that layer the outcome shares (95% Wilson intervals), the per-position shares and the mixing
model fitted for every subset of its terms (`mixing.compare_terms`) follow.

    >>> from interp.organisms.binding import load_organism             # doctest: +SKIP
    >>> model, tok = load_organism()                                  # doctest: +SKIP
    >>> result = analyze_binding(model, tok, BindingConfig(groups=(5, 8)))  # doctest: +SKIP
    >>> print(result.report())                                        # doctest: +SKIP

Memory: per n, the counterfactual's last-token residual at every swept layer
(`layer x batch x d_model` floats) and one KV cache of the original prompts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from interp.analyze.binding.mixing import MixingData, TermComparison, compare_terms
from interp.analyze.binding.patching import decoder_layers
from interp.analyze.binding.sweep import LABELS, Sweep, share_interval
from interp.analyze.binding.sweep import sweeps as sweep_all
from interp.errors import InterpError, check_index
from interp.models.model import as_model
from interp.parallel import check_same, check_work, is_main
from interp.tasks.binding import BindingTask, accuracy

__all__ = ["BindingConfig", "BindingResult", "analyze_binding", "choose_read_layer", "fit_at_layer"]


@dataclass
class BindingConfig:
    """What `analyze_binding` runs. `layers="auto"` sweeps every layer and picks the read layer.

    `pairs` counterfactuals per n (positional group cycling over 0..n-1): 400 keeps every share's
    95% interval within +-0.05. `per_position`, when set, overrides it with `per_position * n`.
    """

    template: str = "boxes"
    format: str = "plain"
    groups: tuple[int, ...] = (3, 5, 10)
    layers: str | list[int] = "auto"
    pairs: int = 400
    per_position: int | None = None
    accuracy_per_position: int = 10
    train_fraction: float = 0.5
    seed: int = 0
    batch_size: int = 32
    mode: str = "cached"
    fit_steps: int = 400
    fit_restarts: int = 3

    def pairs_for(self, n: int) -> int:
        return self.per_position * n if self.per_position is not None else self.pairs


@dataclass
class BindingResult:
    config: BindingConfig
    accuracy: object  # AccuracyReport
    sweeps: dict[int, Sweep]
    read_layer: int
    fit: dict = field(default_factory=dict)
    terms: TermComparison | None = field(default=None, repr=False)

    def layer_shares(self) -> dict[int, dict[int, dict[str, float]]]:
        """n -> layer -> outcome shares."""
        return {n: {layer: s.shares(layer) for layer in s.layers} for n, s in self.sweeps.items()}

    def to_json(self) -> dict:
        return {
            "config": self.config.__dict__ | {"groups": list(self.config.groups)},
            "accuracy": self.accuracy.to_json(),
            "read_layer": self.read_layer,
            "pairs": {n: len(s.pairs) for n, s in self.sweeps.items()},
            "layer_shares": self.layer_shares(),
            "shares_at_read_layer": {n: s.shares(self.read_layer) for n, s in self.sweeps.items()},
            "intervals_at_read_layer": {n: s.intervals(self.read_layer) for n, s in self.sweeps.items()},
            "unpatched_shares": {n: s.shares(None) for n, s in self.sweeps.items()},
            "unpatched_intervals": {n: s.intervals(None) for n, s in self.sweeps.items()},
            "by_position": {n: {"patched": s.by_position(self.read_layer), "unpatched": s.by_position(None)}
                            for n, s in self.sweeps.items()},
            "fit": self.fit,
        }

    def shares_table(self) -> str:
        """Markdown: share [95% Wilson interval] per label, patched at the read layer beside unpatched."""
        lines = ["| n | pairs | prediction | " + " | ".join(LABELS) + " |",
                 "|---|---|---|" + "---|" * len(LABELS)]
        for n, s in self.sweeps.items():
            for name, layer in ((f"patched L{self.read_layer}", self.read_layer), ("unpatched", None)):
                sh, ci = s.shares(layer), s.intervals(layer)
                cells = [f"{sh[k]:.2f} [{ci[k][0]:.2f}, {ci[k][1]:.2f}]" for k in LABELS]
                lines.append(f"| {n} | {len(s.pairs)} | {name} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def report(self) -> str:
        """Markdown: accuracy, read layer, shares with intervals, by position, the term comparison."""
        lines = [f"### {self.config.template} / {self.config.format}", "", self.accuracy.table(), "",
                 (f"Binding read at layer {self.read_layer} (largest gain of the positional + lexical share "
                  "over the unpatched labels)."), "", self.shares_table(), "",
                 ("Shares by positional group p at the read layer, 95% Wilson intervals (unpatched "
                  "positional share last):"), ""]
        for n, s in self.sweeps.items():
            lines += [f"| n={n}, p | pairs | positional | lexical | reflexive | unpatched positional |",
                      "|---|---|---|---|---|---|"]
            labels, base = s.labels(self.read_layer), s.labels(None)
            for p in range(n):
                idx = [i for i, cf in enumerate(s.pairs) if cf.positional == p]
                cells = [_share_cell([labs[i] for i in idx], k) for labs, k in
                         ((labels, "positional"), (labels, "lexical"), (labels, "reflexive"),
                          (base, "positional"))]
                lines.append(f"| {p} | {len(idx)} | " + " | ".join(cells) + " |")
            lines.append("")
        if self.terms is not None:
            lines += [(f"Mixing model at layer {self.fit['layer']}, every subset of its terms fitted on "
                           f"{self.terms.n_train} prompts, scored on {self.terms.n_heldout} held-out prompts "
                           f"(bold: the fewest terms not clearly 0.01 below the best):"), "",
                           self.terms.table()]
        return "\n".join(lines)

    def figures(self) -> dict:
        from interp.analyze.binding.figures import figures  # lazy: start-up (plotly)

        return figures(self)


def _share_cell(labels: list[str], label: str) -> str:
    """'share [low, high]' of `label` among `labels` (95% Wilson)."""
    low, high = share_interval(labels.count(label), len(labels))
    return f"{labels.count(label) / max(len(labels), 1):.2f} [{low:.2f}, {high:.2f}]"


def choose_read_layer(sweeps: dict[int, Sweep]) -> int:
    """The layer where patching moves the answer most through position or key identity.

    Late layers carry the counterfactual's answer itself (which reads as "reflexive"), early layers
    carry nothing (no effect); binding is read where the positional + lexical share gains most over
    the same labels on the unpatched prediction (earliest layer on ties).
    """
    layers = next(iter(sweeps.values())).layers

    def gain(s: Sweep, layer: int) -> float:
        patched, base = s.shares(layer), s.shares(None)
        return patched["positional"] + patched["lexical"] - base["positional"] - base["lexical"]

    score = {layer: sum(gain(s, layer) for s in sweeps.values()) for layer in layers}
    best = max(score.values())
    return min(layer for layer in layers if score[layer] >= best - 1e-9)


def analyze_binding(model, tokenizer, config: BindingConfig | None = None, *,
                    progress: bool = True) -> BindingResult:
    """Accuracy, layer sweep, shares with intervals and the mixing-model term comparison.

    Runtime: per n, three full forwards of `pairs` prompts plus one last-token forward per swept
    layer (KV-cached); the term comparison fits seven small models (seconds).
    Under torchrun (`interp.parallel.init()` first) the accuracy batches and the sweep's batches of
    pairs are dealt to the ranks; every rank returns the result one process returns (the term
    comparison, seconds, runs on every rank).
    """
    from rich.progress import Progress

    config = config or BindingConfig()
    hf = as_model(model).hf
    n_layers = len(decoder_layers(model))
    if config.layers == "auto":
        layers = list(range(n_layers))
    elif isinstance(config.layers, str):
        raise InterpError(f"layers={config.layers!r}: pass 'auto' or a list of layer indices.")
    else:
        layers = [check_index("layer", layer, n_layers, where="the model") for layer in config.layers]
    if not 0 < config.train_fraction < 1:
        raise InterpError(f"train_fraction={config.train_fraction} must lie strictly between 0 and 1.")
    task = BindingTask(config.template, tokenizer, format=config.format)
    for n in config.groups:
        task._check_n(n, minimum=3)
        if config.pairs_for(n) < 2:
            raise InterpError(f"{config.pairs_for(n)} counterfactual pairs for n={n}: use --pairs 2 or more.")
    units = sum(-(-config.pairs_for(n) // config.batch_size) for n in config.groups)
    check_same({**config.__dict__, "model": as_model(model).name}, "binding settings")  # before any work
    check_work(units, f"batches of {config.batch_size} counterfactual pairs", "lower the batch size")
    hf.eval()
    report = accuracy(hf, tokenizer, task, list(config.groups), per_position=config.accuracy_per_position,
                      seed=config.seed, batch_size=config.batch_size, progress=progress and is_main())
    with Progress(disable=not (progress and is_main())) as bar:  # under torchrun rank 0 alone draws
        job = bar.add_task(f"patching {len(layers)} layers", total=units)
        sweeps = sweep_all(model, tokenizer, task, {n: config.pairs_for(n) for n in config.groups}, layers,
                           seed=config.seed, batch_size=config.batch_size, mode=config.mode,
                           progress=lambda: bar.update(job, advance=1))
    read = choose_read_layer(sweeps)
    result = BindingResult(config, report, sweeps, read)
    result.fit, result.terms = fit_at_layer(sweeps, read, config.train_fraction, config.seed,
                                            steps=config.fit_steps, restarts=config.fit_restarts)
    return result


def split(sweeps: dict[int, Sweep], layer: int, train_fraction: float,
          seed: int) -> tuple[MixingData, MixingData]:
    """Pool every n's patched distributions at `layer` and split them at random into train / held-out."""
    width = max(sweeps)
    data = [s.mixing_data(layer, width) for s in sweeps.values()]
    data = MixingData(*(torch.cat([getattr(d, f) for d in data]) for f in
                        ("probs", "n", "positional", "lexical", "reflexive")))
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    cut = int(len(data) * train_fraction)
    return data.subset(order[:cut]), data.subset(order[cut:])


def fit_at_layer(sweeps: dict[int, Sweep], layer: int, train_fraction: float, seed: int, *, steps: int = 400,
                 restarts: int = 3) -> tuple[dict, TermComparison]:
    """Fit the mixing model for every term subset on a train split; 1 - JS with CIs on the held-out split."""
    train, held = split(sweeps, layer, train_fraction, seed)
    terms = compare_terms(train, held, seed=seed, steps=steps, restarts=restarts)
    return {"layer": layer, **terms.to_json()}, terms
