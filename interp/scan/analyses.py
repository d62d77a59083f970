"""Adapters from each analyzer to the scan: one small function per analysis, registered by name.

Each adapter splits its analyzer's work into units (a batch of prompts, a set of trials), wraps
every unit in `ctx.cached(...)` so it is saved once finished, then turns the units' results into
per-head `Metric`s. Units are combined in a fixed order from their saved JSON, so a resumed scan
produces exactly the numbers of an uninterrupted one.
"""

from interp.analyze import heads as _heads
from interp.scan.registry import AnalysisResult, Context, Metric, register

_HEAD_ROLES = {
    "previous_token": ("previous-token head", "attention on the previous token (repeated random tokens)", 0.4),
    "duplicate_token": ("duplicate-token head", "attention on earlier copies of the current token (random tokens)",
                        0.4),
    "induction": ("induction head", "attention on the token after an earlier copy of the current token "
                                    "(second half of repeated random tokens)", 0.4),
    "previous_token_text": ("previous-token head (text)", "previous-token score on natural text", 0.4),
    "duplicate_token_text": ("duplicate-token head (text)", "duplicate-token score on natural text", 0.4),
    "induction_text": ("induction head (text)", "induction score on natural text", 0.4),
    "entropy": ("diffuse attention", "mean attention entropy per query row on natural text (nats)", None),
    "mean_distance": ("long-range attention", "mean attention distance on natural text (tokens back)", None),
}


@register("heads", _heads.HeadsConfig,
          "classic detectors: previous-token, duplicate-token, induction heads; attention entropy and distance")
def heads(model, config: _heads.HeadsConfig, ctx: Context) -> AnalysisResult:
    config.check()
    data = _heads.probe_sets(model, config)
    total, done, sums = sum(map(len, data.values())), 0, {}
    for name, batches in data.items():
        for i, ids in enumerate(batches):
            chunk = _chunk_rows(ctx, model, ids, config.chunk_rows)
            saved = ctx.cached(f"{name}-{i}", lambda: _heads.score_batch(model, ids, chunk).to_json())
            part = _heads.Sums.from_json(saved)
            sums[name] = part if name not in sums else sums[name] + part
            done += 1
            ctx.progress(done, total)
    scores = _heads.scores_from_sums(sums.get("random"), sums.get("text"))
    metrics = {k: Metric(v.tolist(), role=_HEAD_ROLES[k][0], description=_HEAD_ROLES[k][1],
                         threshold=_HEAD_ROLES[k][2]) for k, v in scores.items()}
    summary = {k: sum(x > _HEAD_ROLES[k][2] for row in m.scores for x in row)
               for k, m in metrics.items() if _HEAD_ROLES[k][2] is not None}
    return AnalysisResult(metrics, primary="induction", summary={"heads_over_threshold": summary})


def _chunk_rows(ctx: Context, model, ids, default: int) -> int:
    if ctx.max_memory is None:
        return default
    from interp.capture.budget import chunk_rows

    n = chunk_rows(ctx.max_memory, batch=ids.shape[0], heads=model.adapter.n_heads, k_len=ids.shape[1])
    return max(1, min(default, n))
