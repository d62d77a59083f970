"""Binding mechanisms: interchange interventions that tell positional, lexical and reflexive apart.

For each counterfactual pair from `interp.tasks.binding` the residual stream entering layer `L`
at the last token of the original prompt is replaced by the counterfactual's, and the model's
distribution over the `n` candidate answers is read. Which candidate wins is labelled with the
mechanism that predicts it (positional / lexical / reflexive), "no effect" (the original answer)
or "other". The unpatched prediction gets the same labels, so a model's position bias is never
mistaken for a positional effect. A layer sweep finds where binding is read; at that layer the
per-position outcome shares and the causal mixing model (`interp.analyze.binding_model`) follow.

Three implementations of the intervention agree to float tolerance (tested):
- `patched_logits`: the capture engine's `Patch` editor (`patcher="engine"`) or the local
  `residual_patch` forward pre-hooks (`patcher="hooks"`). It runs the prefix once with a KV cache
  and then only the last token per layer (`mode="cached"`; a last-token patch cannot change the
  prefix), or the whole prompt per layer (`mode="full"`).
- `patched_logits_nnsight`: the same edit inside an `nnsight` trace.

    >>> from interp.organisms.binding import load_organism             # doctest: +SKIP
    >>> model, tok = load_organism()                                  # doctest: +SKIP
    >>> result = analyze_binding(model, tok, BindingConfig(groups=(5, 8)))  # doctest: +SKIP
    >>> result.summary()                                              # doctest: +SKIP

Memory: per n, the counterfactual's last-token residual at every swept layer
(`layer x batch x d_model` floats) and one KV cache of the original prompts.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.analyze.binding_model import MixingData, MixingModel, fit_mixing_model, uniform_score
from interp.capture import Patch, capture
from interp.errors import InterpError, check_index
from interp.models.model import as_model
from interp.tasks.binding import BindingTask, Counterfactual, accuracy, tokenize_prompts

LABELS = ("positional", "lexical", "reflexive", "no effect", "other")


# -- the intervention ---------------------------------------------------------------------------------
def decoder_layers(model) -> torch.nn.ModuleList:
    """The decoder blocks of a model (through `interp`'s architecture adapter)."""
    m = as_model(model)
    return m.adapter.blocks(m.adapter.main_stack)


def _hf(model):
    return as_model(model).hf


@contextmanager
def residual_patch(model, patches: dict[int, Tensor], positions: slice | int = -1):
    """Replace the residual entering decoder layer `L` at `positions` with `patches[L]` for each L.

    `patches[L]` is `[batch, d_model]` for one position or `[batch, pos, d_model]` for a slice.
    Hooks are removed when the block exits, even on error.

        >>> with residual_patch(model, {3: cf_resid}):   # doctest: +SKIP
        ...     logits = model(**batch).logits
    """
    layers = decoder_layers(model)
    handles = []

    def make(value: Tensor):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            hidden = hidden.clone()
            hidden[:, positions] = value.to(hidden.device, hidden.dtype)
            if args:
                return (hidden, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": hidden}
        return hook

    try:
        for layer, value in patches.items():
            layer = check_index("layer", layer, len(layers), where="the model")
            handles.append(layers[layer].register_forward_pre_hook(make(value), with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


def _positions(mask: Tensor) -> Tensor:
    """Position ids that ignore left padding (the same for padded and unpadded prompts)."""
    return (mask.cumsum(-1) - 1).clamp_min(0)


@torch.no_grad()
def residuals(model, batch: dict[str, Tensor], layers: list[int]) -> Float[Tensor, "layer batch d_model"]:
    """The residual stream entering each of `layers` at the last token (the engine's `resid_pre`).

    Memory: the engine keeps every position of each layer for the batch before the last is taken.
    """
    m = as_model(model)
    layers = [m.adapter.check_layer(layer, m.adapter.main_stack) for layer in layers]
    with capture(m, resid_pre=layers) as rec:
        m.hf(**batch, position_ids=_positions(batch["attention_mask"]), use_cache=False)
    return torch.stack([rec.resid_pre[layer][:, -1] for layer in layers])


@torch.no_grad()
def patched_logits(model, batch: dict[str, Tensor], source: Float[Tensor, "layer batch d_model"],
                   layers: list[int], *, mode: str = "cached", patcher: str = "engine"
                   ) -> Float[Tensor, "layer batch vocab"]:
    """Last-token logits with the residual entering each layer (one at a time) replaced by `source`.

    `layers[i]` is patched with `source[i]`. `mode="cached"` runs the prompt minus its last token
    once with a KV cache and then only the last token per layer (a last-token patch cannot change
    earlier positions); `mode="full"` reruns the whole prompt per layer. `patcher="engine"` uses
    `interp.capture(..., edits=[Patch(...)])`; `patcher="hooks"` the local `residual_patch`.
    """
    if mode not in ("cached", "full"):
        raise InterpError(f"unknown patching mode {mode!r}: use 'cached' or 'full'.")
    if patcher not in ("engine", "hooks"):
        raise InterpError(f"unknown patcher {patcher!r}: use 'engine' or 'hooks'.")
    m = as_model(model)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    pos = _positions(mask)

    def patched(layer: int, value: Tensor):
        if patcher == "hooks":
            return residual_patch(m, {layer: value})
        return capture(m, edits=[Patch(layer=layer, positions=[-1], values=value[:, None])])

    out = []
    if mode == "full":
        for i, layer in enumerate(layers):
            with patched(layer, source[i]):
                out.append(m.hf(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
                           .logits[:, -1].float())
        return torch.stack(out)
    cache = m.hf(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=pos[:, :-1], use_cache=True).cache
    for i, layer in enumerate(layers):
        with patched(layer, source[i]):
            logits = m.hf(input_ids=ids[:, -1:], attention_mask=mask, position_ids=pos[:, -1:],
                          cache=cache, use_cache=True).logits[:, -1].float()
        try:
            cache.crop(-1)  # drop the last token again: the prefix is reused for the next layer
        except (ValueError, RuntimeError) as err:
            raise InterpError(f"this model's KV cache cannot roll back ({err}); use mode='full'.") from err
        out.append(logits)
    return torch.stack(out)


@torch.no_grad()
def patched_logits_nnsight(model, tokenizer, batch: dict[str, Tensor],
                           source: Float[Tensor, "layer batch d_model"], layers: list[int]
                           ) -> Float[Tensor, "layer batch vocab"]:
    """The same intervention as `patched_logits` through an nnsight trace (full prompt per layer)."""
    from nnsight import LanguageModel

    m = as_model(model, tokenizer)
    hf = m.hf
    lm = m.nnsight if m.nnsight is not None else LanguageModel(hf, tokenizer=tokenizer)
    names = {id(m): n for n, m in hf.named_modules()}
    blocks = decoder_layers(model)
    pos = _positions(batch["attention_mask"])
    out = []
    for i, layer in enumerate(layers):
        block = lm.get(names[id(blocks[check_index("layer", layer, len(blocks))])])
        with lm.trace(dict(batch, position_ids=pos, use_cache=False)):
            block.input[:, -1] = source[i]
            logits = lm.output.logits[:, -1].save()
        out.append(logits.float())
    return torch.stack(out)


# -- outcomes -------------------------------------------------------------------------------------------
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

    def by_position(self, layer: int | None) -> list[dict[str, float]]:
        """Outcome shares grouped by the group the positional mechanism points to."""
        labels = self.labels(layer)
        return [shares([lab for lab, cf in zip(labels, self.pairs) if cf.positional == p]) for p in range(self.n)]

    def mixing_data(self, layer: int, width: int) -> MixingData:
        probs = torch.zeros(len(self.pairs), width)
        probs[:, : self.n] = self.probs[self.layers.index(layer)]
        t = lambda attr: torch.tensor([getattr(cf, attr) for cf in self.pairs])
        return MixingData(probs, torch.full((len(self.pairs),), self.n), t("positional"), t("lexical"),
                          t("reflexive"))


def sweep(model, tokenizer, task: BindingTask, n: int, layers: list[int], *, per_position: int = 8,
          seed: int = 0, batch_size: int = 32, mode: str = "cached", progress=None) -> Sweep:
    """Build `per_position` counterfactuals per positional group and patch them at every layer."""
    rng = random.Random(seed * 1000 + n)
    pairs = [task.counterfactual(n, rng=rng, positional=p) for p in range(n) for _ in range(per_position)]
    device = next(_hf(model).parameters()).device
    probs, base, cf_probs = [], [], []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i: i + batch_size]
        orig = tokenize_prompts(tokenizer, [c.original for c in chunk])
        cf = tokenize_prompts(tokenizer, [c.counterfactual for c in chunk])
        ob = {k: v.to(device) for k, v in orig.batch().items()}
        cb = {k: v.to(device) for k, v in cf.batch().items()}
        src = residuals(model, cb, layers)
        logits = patched_logits(model, ob, src, layers, mode=mode).cpu()
        cand = orig.candidates
        probs.append(logits.gather(2, cand[None].expand(len(layers), -1, -1)).softmax(-1))
        with torch.no_grad():
            hf = _hf(model)
            base.append(hf(**ob, position_ids=_positions(ob["attention_mask"])).logits[:, -1].float().cpu()
                        .gather(1, cand).softmax(-1))
            cf_probs.append(hf(**cb, position_ids=_positions(cb["attention_mask"])).logits[:, -1].float().cpu()
                            .gather(1, cf.candidates).softmax(-1))
        if progress is not None:
            progress()
    return Sweep(n, list(layers), pairs, torch.cat(probs, 1), torch.cat(base), torch.cat(cf_probs))


# -- the whole analysis ---------------------------------------------------------------------------------
@dataclass
class BindingConfig:
    """What `analyze_binding` runs. `layers="auto"` sweeps every layer and picks the read layer."""

    template: str = "boxes"
    format: str = "plain"
    groups: tuple[int, ...] = (3, 5, 10)
    layers: str | list[int] = "auto"
    per_position: int = 8
    accuracy_per_position: int = 10
    train_fraction: float = 0.5
    seed: int = 0
    batch_size: int = 32
    mode: str = "cached"
    fit_steps: int = 400
    fit_restarts: int = 3


@dataclass
class BindingResult:
    config: BindingConfig
    accuracy: object  # AccuracyReport
    sweeps: dict[int, Sweep]
    read_layer: int
    fit: dict = field(default_factory=dict)
    mixing: MixingModel | None = field(default=None, repr=False)  # fitted on the train split

    def layer_shares(self) -> dict[int, dict[int, dict[str, float]]]:
        """n -> layer -> outcome shares."""
        return {n: {layer: s.shares(layer) for layer in s.layers} for n, s in self.sweeps.items()}

    def to_json(self) -> dict:
        return {
            "config": self.config.__dict__ | {"groups": list(self.config.groups)},
            "accuracy": self.accuracy.to_json(),
            "read_layer": self.read_layer,
            "layer_shares": self.layer_shares(),
            "shares_at_read_layer": {n: s.shares(self.read_layer) for n, s in self.sweeps.items()},
            "unpatched_shares": {n: s.shares(None) for n, s in self.sweeps.items()},
            "by_position": {n: {"patched": s.by_position(self.read_layer), "unpatched": s.by_position(None)}
                            for n, s in self.sweeps.items()},
            "fit": self.fit,
        }

    def report(self) -> str:
        """Markdown: accuracy, read layer, shares (patched beside unpatched), by position, the fit."""
        lines = [f"### {self.config.template} / {self.config.format}", "", self.accuracy.table(), "",
                 (f"Binding read at layer {self.read_layer} (largest gain of the positional + lexical share "
                  "over the unpatched labels)."), "",
                 "| n | prediction | " + " | ".join(LABELS) + " |", "|---|---|" + "---|" * len(LABELS)]
        for n, s in self.sweeps.items():
            for name, layer in (("patched", self.read_layer), ("unpatched", None)):
                sh = s.shares(layer)
                lines.append(f"| {n} | {name} | " + " | ".join(f"{sh[k]:.2f}" for k in LABELS) + " |")
        lines += ["", ("Positional / lexical / reflexive share by positional group p (unpatched positional share "
                       "in brackets):"), ""]
        for n, s in self.sweeps.items():
            pat, base = s.by_position(self.read_layer), s.by_position(None)
            cells = [f"{a['positional']:.2f}/{a['lexical']:.2f}/{a['reflexive']:.2f} ({b['positional']:.2f})"
                     for a, b in zip(pat, base)]
            lines.append(f"- n={n}: " + ", ".join(f"p{p}: {c}" for p, c in enumerate(cells)))
        if self.fit:
            h = self.fit["heldout"]
            lines += ["", (f"Mixing model at layer {self.fit['layer']}, held-out 1-JS ({self.fit['n_heldout']} "
                           f"prompts): mixing {h['mixing']:.3f}, positional-only {h['positional_only']:.3f}, "
                           f"uniform {h['uniform']:.3f}.")]
        return "\n".join(lines)

    def figures(self) -> dict:
        from interp.analyze.binding_figures import figures

        return figures(self)


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
    """Accuracy, layer sweep, per-position shares and the mixing-model fit for one template/format.

    Runtime: per n, three full forwards of `n * per_position` prompts plus one last-token forward
    per swept layer (KV-cached).
    """
    from rich.progress import Progress

    config = config or BindingConfig()
    hf = _hf(model)
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
    hf.eval()
    report = accuracy(hf, tokenizer, task, list(config.groups), per_position=config.accuracy_per_position,
                      seed=config.seed, batch_size=config.batch_size, progress=progress)
    sweeps = {}
    total = sum(-(-n * config.per_position // config.batch_size) for n in config.groups)
    with Progress(disable=not progress) as bar:
        job = bar.add_task(f"patching {len(layers)} layers", total=total)
        for n in config.groups:
            sweeps[n] = sweep(model, tokenizer, task, n, layers, per_position=config.per_position,
                              seed=config.seed, batch_size=config.batch_size, mode=config.mode,
                              progress=lambda: bar.update(job, advance=1))
    read = choose_read_layer(sweeps)
    result = BindingResult(config, report, sweeps, read)
    result.fit, result.mixing = fit_at_layer(sweeps, read, config.train_fraction, config.seed,
                                             steps=config.fit_steps, restarts=config.fit_restarts)
    return result


def fit_at_layer(sweeps: dict[int, Sweep], layer: int, train_fraction: float, seed: int, *, steps: int = 400,
                 restarts: int = 3) -> tuple[dict, MixingModel]:
    """Fit full and positional-only mixing models on a train split; 1 - JS on the held-out split."""
    width = max(sweeps)
    data = [s.mixing_data(layer, width) for s in sweeps.values()]
    data = MixingData(*(torch.cat([getattr(d, f) for d in data]) for f in
                        ("probs", "n", "positional", "lexical", "reflexive")))
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    cut = int(len(data) * train_fraction)
    train, held = data.subset(order[:cut]), data.subset(order[cut:])
    full = fit_mixing_model(train, "full", seed=seed, steps=steps, restarts=restarts)
    pos = fit_mixing_model(train, "positional", seed=seed, steps=steps, restarts=restarts)
    return {"layer": layer, "n_train": len(train), "n_heldout": len(held),
            "heldout": {"mixing": full.score(held), "positional_only": pos.score(held),
                        "uniform": uniform_score(held)},
            "train": {"mixing": full.score(train), "positional_only": pos.score(train),
                      "uniform": uniform_score(train)},
            "params": {"mixing": full.params(), "positional_only": pos.params()}}, full
