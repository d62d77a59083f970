"""Analyzers under torchrun for tests/test_parallel_runs.py: `torchrun ... parallel_units_job.py TINY_DIR
OUT`.

`run(tiny_dir, checkpoint)` gives the same dictionary alone or on every rank: retrieval scores,
a head search scored by the model, a pruning experiment and sink statistics, each split over the ranks.
"""

import sys
from pathlib import Path

import torch

import interp
from interp.analyze.prune import PruneConfig, perplexity, prune_experiment
from interp.analyze.retrieval import retrieval_scores
from interp.analyze.sinks import SinkConfig, find_sinks, passages
from interp.errors import InterpError
from interp.intervene.head_search import SearchConfig, search_heads
from interp.parallel import check_same, check_work, finish, init, is_main
from interp.tasks.niah import NEEDLES, NiahConfig, build_trials


def run(tiny_dir: str, checkpoint: Path | None = None) -> dict:
    m = interp.load(tiny_dir)
    trials = build_trials(m.tokenizer,
                          NiahConfig(lengths=(120,), depths=(0.2, 0.5, 0.8), needles=NEEDLES[:2]),
                          n_ctx=m.adapter.n_ctx)
    scores = retrieval_scores(m, trials, batch_size=2, max_new_tokens=3, checkpoint=checkpoint,
                              progress=False)
    heldout = torch.randint(1, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    config = PruneConfig(top_k=[2], random_draws=2, batch_size=2, max_new_tokens=3)
    search = search_heads(lambda heads: (-perplexity(m, heldout, heads, config),), n_layers=3, n_heads=4,
                          config=SearchConfig(budget=8, max_heads=2, skip_first=1, skip_last=0),
                          progress=False)
    pruned = prune_experiment(m, scores, trials[:2], heldout, config, progress=False)
    sink_config = SinkConfig(length=16, batch_size=2, tau=0.05)
    sinks = find_sinks(m, passages(6, words=20), sink_config, progress=False)
    return {"sinks": {"first": sinks.first.tolist(), "n_hidden": sinks.n_hidden.tolist(),
                      "hidden": [vars(h) for h in sinks.hidden], "lengths": sinks.n_tokens},
            "scores": scores.to_json(), "trial_ids": scores.trial_ids, "n_trials": scores.n_trials,
            "search": search.to_json(), "prune": pruned.to_json()}


def bad_setups() -> dict:
    """The messages of the errors a 2-rank run must raise on every rank."""
    errors = {}
    try:
        check_work(1, "work units")
    except InterpError as err:
        errors["work"] = str(err)
    try:
        check_same({"threads": int(torch.distributed.get_rank())})
    except InterpError as err:
        errors["same"] = str(err)
    return errors


if __name__ == "__main__":
    init()
    try:
        result = {**run(sys.argv[1], Path(sys.argv[2]).with_suffix(".jsonl")), "bad": bad_setups()}
        if is_main():
            torch.save(result, sys.argv[2])
    finally:
        finish()  # leave the group: a gloo rank that exits inside it can abort at shutdown
