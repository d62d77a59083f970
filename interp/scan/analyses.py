"""Adapters from each analyzer to the scan: one small function per analysis, registered by name.

Each adapter splits its analyzer's work into units (a batch of prompts, a set of trials), wraps
every unit in `ctx.cached(...)` so it is saved once finished, then turns the units' results into
per-head `Metric`s. Units are combined in a fixed order from their saved JSON, so a resumed scan
produces exactly the numbers of an uninterrupted one.
"""

from dataclasses import dataclass

from interp.analyze import heads as _heads
from interp.scan.registry import AnalysisResult, Context, Metric, register

_HEAD_ROLES = {
    "previous_token": ("previous-token head", "attention on the previous token (repeated random tokens)",
                       0.4),
    "duplicate_token": ("duplicate-token head",
                        ("attention on earlier copies of the current token (random tokens)"), 0.4),
    "induction": ("induction head",
                  ("attention on the token after an earlier copy of the current token "
                   "(second half of repeated random tokens)"), 0.4),
    "previous_token_text": ("previous-token head (text)", "previous-token score on natural text", 0.4),
    "duplicate_token_text": ("duplicate-token head (text)", "duplicate-token score on natural text", 0.4),
    "induction_text": ("induction head (text)", "induction score on natural text", 0.4),
    "entropy": ("diffuse attention", "mean attention entropy per query row on natural text (nats)", None),
    "mean_distance": ("long-range attention", "mean attention distance on natural text (tokens back)", None),
}


@register("heads", _heads.HeadsConfig,
          "classic detectors: previous-token, duplicate-token, induction heads; attention entropy and "
          "distance")
def heads(model, config: _heads.HeadsConfig, ctx: Context) -> AnalysisResult:
    config.check()
    data = _heads.probe_sets(model, config)
    units = [(f"{name}-{i}", lambda ids=ids: _heads.score_batch(model, ids, _chunk_rows(ctx, model, ids,
                                                                                          config.chunk_rows)).to_json())
             for name, batches in data.items() for i, ids in enumerate(batches)]
    names = [name for name, batches in data.items() for _ in batches]
    sums = {}
    for name, saved in zip(names, ctx.map(units, hint="lower heads.batch_size")):
        part = _heads.Sums.from_json(saved)
        sums[name] = part if name not in sums else sums[name] + part
    scores = _heads.scores_from_sums(sums.get("random"), sums.get("text"))
    metrics = {k: Metric(v.tolist(), role=_HEAD_ROLES[k][0], description=_HEAD_ROLES[k][1],
                         threshold=_HEAD_ROLES[k][2]) for k, v in scores.items()}
    summary = {k: sum(x > _HEAD_ROLES[k][2] for row in m.scores for x in row)
               for k, m in metrics.items() if _HEAD_ROLES[k][2] is not None}
    return AnalysisResult(metrics, primary="induction", summary={"heads_over_threshold": summary})


def _chunk_rows(ctx: Context, model, ids, default: int) -> int:
    if ctx.max_memory is None:
        return default
    # lazy: start-up (an analysis imports its analyzer when it runs)
    from interp.capture.budget import chunk_rows

    n = chunk_rows(ctx.max_memory, batch=ids.shape[0], heads=model.adapter.n_heads, k_len=ids.shape[1])
    return max(1, min(default, n))


# --------------------------------------------------------------------------------------------------- sinks


@dataclass
class SinksScan:
    """Gu et al.'s setting, small: `n_prompts` passages of `words` words cut to `length` tokens."""

    n_prompts: int = 16
    words: int = 80
    length: int = 64
    batch_size: int = 8
    eps: float = 0.3
    tau: float = 0.1
    seed: int = 0


@register("sinks", SinksScan, "attention sinks: first-token column mean (Gu et al.), hidden sinks (ACT)")
def sinks(model, config: SinksScan, ctx: Context) -> AnalysisResult:
    import torch

    # lazy: start-up (an analysis imports its analyzer when it runs)
    from interp.analyze.sinks import HiddenSink, SinkConfig, SinkReport, find_sinks, passages

    prompts = passages(config.n_prompts, words=config.words, seed=config.seed)
    cfg = SinkConfig(epsilons=(config.eps,), tau=config.tau, length=config.length,
                     batch_size=config.batch_size)
    groups = [prompts[i:i + config.batch_size] for i in range(0, len(prompts), config.batch_size)]
    firsts, counts, hidden, lengths, seen = [], [], [], [], 0

    def compute(group):
        r = find_sinks(model, group, cfg, progress=False)
        return {"first": r.first.tolist(), "n_hidden": r.n_hidden.tolist(), "n_tokens": r.n_tokens,
                "hidden": [[s.prompt, s.layer, s.head, s.position, s.token, s.alpha] for s in r.hidden]}

    parts = ctx.map([(f"prompts-{i}", lambda g=g: compute(g)) for i, g in enumerate(groups)],
                    hint="raise sinks.n_prompts or lower sinks.batch_size")
    for group, part in zip(groups, parts):
        firsts.append(torch.tensor(part["first"]))
        counts.append(torch.tensor(part["n_hidden"]))
        hidden += [HiddenSink(seen + p, *rest) for p, *rest in part["hidden"]]
        lengths += part["n_tokens"]
        seen += len(group)
    report = SinkReport(torch.cat(firsts), torch.cat(counts), hidden, list(range(model.adapter.n_layers())),
                        config.tau, (config.eps,), lengths)
    metrics = {
        "first_token_alpha": Metric(report.first.mean(0).tolist(), role="first-token sink",
                                    description="column mean of the first token, mean over prompts (Gu et "
                                                "al.)",
                                    threshold=config.eps),
        "sink_rate": Metric((report.first > config.eps).float().mean(0).tolist(), role="first-token sink",
                            description=f"share of prompts whose first token has column mean > {config.eps}",
                            threshold=0.5),
        "hidden_sinks": Metric(report.n_hidden.float().mean(0).tolist(), role="hidden sink",
                               description=f"keys beyond the first with column mean > {config.tau}, per "
                                           f"prompt (ACT)", threshold=0.5),
    }
    summary = {f"Sink1^{config.eps}": report.sink_rate(config.eps), "hidden_rate": report.hidden_rate(),
               "top_hidden_tokens": report.token_table(8),
               "per_prompt": {"sink_rate": (report.first > config.eps).float().mean((1, 2)).tolist(),
                              "hidden_rate": (report.n_hidden > 0).float().mean((1, 2)).tolist()}}
    return AnalysisResult(metrics, primary="first_token_alpha", summary=summary)


# ----------------------------------------------------------------------------------------------- retrieval
@dataclass
class RetrievalScan:
    """Wu et al.'s needle-in-a-haystack trials, small: `n_needles` needles x lengths x depths."""

    lengths: tuple[int, ...] = (300,)
    depths: tuple[float, ...] = (0.2, 0.5, 0.8)
    n_needles: int = 4
    batch_size: int = 6
    max_new_tokens: int = 10
    threshold: float = 0.1


def _retrieval_available():
    from pathlib import Path

    # lazy: start-up (an analysis imports its analyzer when it runs)
    from interp.tasks import niah

    if Path(niah.DEFAULT_HAYSTACK).exists():
        return None
    return f"haystack text {niah.DEFAULT_HAYSTACK} is missing"


@register("retrieval", RetrievalScan,
          "retrieval heads: copy-paste attention during needle-in-a-haystack decoding " "(Wu et al. 2024)",
          _retrieval_available)
def retrieval(model, config: RetrievalScan, ctx: Context) -> AnalysisResult:
    import torch

    # lazy: start-up (an analysis imports its analyzer when it runs)
    from interp.analyze.decoding import PrefixCache
    from interp.analyze.retrieval import TrialResult, prefix_order, run_trials, scores_from_results
    from interp.tasks.niah import NEEDLES, NiahConfig, build_trials

    niah = NiahConfig(lengths=tuple(config.lengths), depths=tuple(config.depths),
                      needles=NEEDLES[: config.n_needles])
    trials = prefix_order(build_trials(model.tokenizer, niah, n_ctx=model.adapter.n_ctx))
    groups = [trials[i:i + config.batch_size] for i in range(0, len(trials), config.batch_size)]

    def compute(group):
        # a fresh prefix cache per unit: each unit is computed alike alone, resumed or on any torchrun rank
        # (under a scan's calibration run_trials sees the enclosing editor and decodes left-padded batches)
        return [r.to_json()
                for batch in run_trials(model, group, batch_size=config.batch_size, prefix=PrefixCache(),
                                        max_new_tokens=config.max_new_tokens, score=True, progress=False)
                for r in batch]

    parts = ctx.map([(f"trials-{i}", lambda g=g: compute(g)) for i, g in enumerate(groups)],
                    hint="raise retrieval.n_needles or lower retrieval.batch_size")
    results = [TrialResult(r["id"], r["output"], r["recall"], torch.tensor(r["scores"])) for part in parts
               for r in part]
    scores = scores_from_results(results, model.adapter.n_layers(), model.adapter.n_heads, model.name)
    metric = Metric(scores.mean.tolist(), role="retrieval head", threshold=config.threshold,
                    description="mean copy score over recalled NIAH trials (Wu et al. 2024)")
    summary = {"trials": scores.n_trials, "recalled": len(scores.trial_ids),
               f"fraction_over_{config.threshold}": scores.fraction_over(config.threshold),
               "per_trial": {"id": [r.id for r in results], "recall": [r.recall for r in results]}}
    return AnalysisResult({"retrieval": metric}, primary="retrieval", summary=summary)


# ------------------------------------------------------------------------------------------------ saliency
SALIENCY_PROMPTS = ("The capital of France is", "Alice gave Bob a book because he", "Two plus three equals")


@dataclass
class SaliencyScan:
    """Attention vs gradient saliency (Papi et al. 2025) per head, on a few short prompts."""

    prompts: tuple[str, ...] = SALIENCY_PROMPTS
    max_new_tokens: int = 4
    method: str = "input_x_gradient"
    drop_first: bool = True  # leave the first token (an attention sink) out of the correlation


@register("saliency", SaliencyScan, "attention vs input saliency: per-head Pearson / Spearman correlation")
def saliency(model, config: SaliencyScan, ctx: Context) -> AnalysisResult:
    import torch

    # lazy: start-up (an analysis imports its analyzer when it runs)
    from interp.analyze.agreement import pearson, spearman
    from interp.analyze.saliency import SaliencyConfig, explain_text

    totals, steps = {"pearson": 0.0, "spearman": 0.0}, 0
    for i, prompt in enumerate(config.prompts):
        def compute(prompt=prompt):
            with torch.enable_grad():
                rep = explain_text(model, prompt, max_new_tokens=config.max_new_tokens,
                                   config=SaliencyConfig(method=config.method))
            if config.drop_first and len(rep.inputs) > 2:
                rep = rep.drop_first(1)
            sal = rep.saliency.abs()
            L, H = rep.attention.shape[:2]
            out = {k: [[f(rep.attention[layer, head], sal).nan_to_num(0.0).sum().item() for head in range(H)]
                       for layer in range(L)] for k, f in (("pearson", pearson), ("spearman", spearman))}
            return {**out, "steps": int(sal.shape[0])}

        part = ctx.cached(f"prompt-{i}", compute)
        totals = {k: v + torch.tensor(part[k], dtype=torch.float64) for k, v in totals.items()}
        steps += part["steps"]
        ctx.progress(i + 1, len(config.prompts))
    metrics = {k: Metric((v / max(steps, 1)).float().tolist(), role="saliency-aligned head",
                         description=f"{k} correlation of the head's attention with |{config.method}| "
                                     f"saliency, mean over generated tokens", threshold=0.5)
               for k, v in totals.items()}
    return AnalysisResult(metrics, primary="pearson", summary={"generated_tokens": steps})


# ------------------------------------------------------------------------------------------------- binding
@dataclass
class BindingScan:
    """Binding mechanisms (Gur-Arieh et al. 2025): one group count, a few prompts per position, every
    layer."""

    n: int = 3
    per_position: int = 4
    accuracy_per_position: int = 4
    template: str = "boxes"
    batch_size: int = 16


@register("binding", BindingScan,
          "binding mechanisms: positional / lexical / reflexive share of residual patching per layer "
          "(per-layer, not per-head)")
def binding(model, config: BindingScan, ctx: Context) -> AnalysisResult:
    # lazy: start-up (an analysis imports its analyzer when it runs)
    from interp.analyze.binding import LABELS, BindingConfig, analyze_binding

    def compute():
        cfg = BindingConfig(template=config.template, groups=(config.n,), per_position=config.per_position,
                            accuracy_per_position=config.accuracy_per_position, batch_size=config.batch_size)
        return analyze_binding(model, model.tokenizer, cfg, progress=False).to_json()

    res = ctx.cached(f"n{config.n}", compute)
    ctx.progress(1, 1)
    shares = res["layer_shares"][str(config.n)] if str(config.n) in res["layer_shares"] else \
        res["layer_shares"][config.n]
    layers = sorted(shares, key=int)
    scores = [[shares[layer][label] for label in LABELS] for layer in layers]
    metric = Metric(scores, role="binding read here", columns=list(LABELS),
                    description=f"share of patched predictions per mechanism, n={config.n} groups, by layer")
    summary = {"read_layer": res["read_layer"], "unpatched_shares": res["unpatched_shares"],
               "accuracy": res["accuracy"], "pairs": res.get("pairs"),
               "intervals_at_read_layer": res.get("intervals_at_read_layer"),
               "mixing_terms": {name: [row["heldout"], row["low"], row["high"]]
                                for name, row in res.get("fit", {}).get("rows", {}).items()},
               "mixing_chosen": res.get("fit", {}).get("chosen")}
    return AnalysisResult({"mechanism_shares": metric}, primary="mechanism_shares", summary=summary)
