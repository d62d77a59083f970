"""Binding, saliency and few-shot scoring under torchrun for tests/test_parallel_analyzers.py:
`torchrun ... parallel_analyzers_job.py TINY_DIR OUT`.

`run(tiny_dir)` gives the same dictionary alone or on every rank: the binding sweep's candidate
probabilities and accuracy, saliency reports of three prompts, few-shot label log-probabilities, and
a binding sweep run inside one `map_units` unit (as a scan runs it), each split over the ranks.
"""

import sys
from pathlib import Path

import torch

import interp
from interp.analyze.binding import sweep
from interp.analyze.binding.sweep import sweeps
from interp.analyze.saliency_inputs import explain_inputs
from interp.errors import InterpError
from interp.parallel import finish, init, is_main, map_units
from interp.tasks.binding import BindingTask, accuracy
from interp.tasks.fewshot import get_task, label_logprobs, label_token_ids, make_split

PROMPTS = ["The cat sat on the", "One two three", "Water boils at"]


def run(tiny_dir: str) -> dict:
    m = interp.load(tiny_dir)
    task = BindingTask("boxes", m.tokenizer, format="plain")
    swept = sweeps(m, m.tokenizer, task, {3: 5, 4: 4}, [0, 2], seed=1, batch_size=2)  # 3 + 2 batches
    acc = accuracy(m.hf, m.tokenizer, task, [3, 4], per_position=2, batch_size=3, progress=False)
    reports = explain_inputs(m, PROMPTS, max_new_tokens=3)
    few = get_task("sst2")
    split = make_split(few, shots=2, dev=2, test=10, seed=0)
    logprobs = label_logprobs(m, [few.prompt(split.demos, ex) for ex in split.test],
                              label_token_ids(m.tokenizer, few), batch_size=3)
    # inside a unit (a scan's binding unit): the nested sweep runs locally, its checks are no-ops
    nested = map_units(lambda _: sweep(m, m.tokenizer, task, 3, [1], pairs=3, batch_size=2).probs, [0])[0]
    return {"sweeps": {n: (s.probs, s.base, s.cf_probs, [vars(c) for c in s.pairs])
                       for n, s in swept.items()},
            "accuracy": acc.to_json(), "reports": [vars(r) for r in reports], "logprobs": logprobs,
            "nested": nested}


def bad_setups(tiny_dir: str) -> dict:
    """The messages of the errors a 2-rank run must raise on every rank (one unit of work, other settings)."""
    m = interp.load(tiny_dir)
    task = BindingTask("boxes", m.tokenizer, format="plain")
    calls = {"binding": lambda: sweep(m, m.tokenizer, task, 3, [0], pairs=3, batch_size=8),
             "saliency": lambda: explain_inputs(m, PROMPTS[:1], max_new_tokens=2),
             "binding_same": lambda: sweep(m, m.tokenizer, task, 3, [0], pairs=4,
                                           seed=torch.distributed.get_rank(), batch_size=2),
             "saliency_same": lambda: explain_inputs(m, PROMPTS[:2],
                                                     max_new_tokens=2 + torch.distributed.get_rank())}
    errors = {}
    for name, call in calls.items():
        try:
            call()
        except InterpError as err:
            errors[name] = str(err)
    return errors


if __name__ == "__main__":
    init()
    try:
        result = {**run(sys.argv[1]), "bad": bad_setups(sys.argv[1])}
        if is_main():
            torch.save(result, Path(sys.argv[2]))
    finally:
        finish()  # leave the group: a gloo rank that exits inside it can abort at shutdown
