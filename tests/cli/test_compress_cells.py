"""`interp compress` cells: shared-prefix, chunked evaluation equals plain greedy decoding."""

import argparse
import math

import pytest
import torch
from kv_sim import MIXED, policy, simulate
from tiny import copying_llama

from interp.cli.compress_run import Experiment, shared_prefixes
from interp.errors import InterpError
from interp.tasks.niah import Needle, Trial

pytestmark = pytest.mark.fast

N_NEW = 4


def _trials(m) -> list[Trial]:
    """Two depths x two needles: prompts that share a random prefix per depth, then differ."""
    g = torch.Generator().manual_seed(5)
    trials = []
    for depth, n_shared in ((0.3, 9), (0.7, 17)):
        shared = torch.randint(3, 12, (n_shared,), generator=g).tolist()
        for k in range(2):
            ids = shared + torch.randint(3, 12, (8 + k,), generator=g).tolist()
            trials.append(Trial(f"d{depth}-n{k}", Needle("x", "q", "x", ""), 26, depth, ids, (0, 1), (0, 1)))
    return trials


def _reference(m, trials, kv):
    """Each prompt on its own through `generate` (the fp64 masked simulation when `kv` is given)."""
    outs = []
    for t in trials:
        batch = {"input_ids": torch.tensor([t.input_ids]), "attention_mask": torch.ones(1, len(t.input_ids),
                                                                                       dtype=torch.long)}
        if kv is None:
            seq = m.hf.generate(**batch, max_new_tokens=N_NEW, do_sample=False, pad_token_id=0)
        else:
            seq = simulate(m.hf, batch, kv, n=N_NEW).sequences
        outs.append(m.tokenizer.decode(seq[0, len(t.input_ids):].tolist()))
    return outs


@pytest.mark.parametrize("use_policy", [False, True])
def test_cell_equals_each_prompt_decoded_alone(tmp_path, use_policy):
    m = copying_llama()
    kv = policy(MIXED, sink=2, window=4) if use_policy else None
    trials = _trials(m)
    want = _reference(m, trials, kv)
    answers = [w if i % 2 == 0 else "12" for i, w in enumerate(want)]  # id 12 is never generated
    trials = [Trial(t.id, Needle(a, "q", a, ""), t.length, t.depth, t.input_ids, (0, 1), (0, 1))
              for t, a in zip(trials, answers)]
    args = argparse.Namespace(max_new_tokens=N_NEW, prefill_chunk=5)
    heldout = [torch.randint(3, 12, (23,), generator=torch.Generator().manual_seed(6))]
    row = Experiment(m, tmp_path, args, progress=False).cell(kv, 26, trials, heldout)
    assert row["recalled"] == [True, False, True, False]
    if kv is None:  # perplexity: the chunked windows equal one pass over the window
        with torch.no_grad():
            logits = m.hf(input_ids=heldout[0][None]).logits[0, :-1]
        want_ppl = math.exp(torch.nn.functional.cross_entropy(logits, heldout[0][1:]).item())
        assert row["perplexity"] == pytest.approx(want_ppl, rel=1e-5)
    assert row["peak_rss_mb"] >= row["rss_start_mb"] > 0


def test_shared_prefixes_group_by_depth():
    trials = _trials(copying_llama())
    groups = shared_prefixes(trials)
    assert [len(p) for p, _ in groups] == [9, 17] and [len(g) for _, g in groups] == [2, 2]
    assert shared_prefixes(trials[:1]) == [([], trials[:1])]


def test_resume_with_other_settings_is_refused(tmp_path):
    m = copying_llama()
    base = dict(sink=4, window=256, depths=[0.5], seed=0, model="tiny")
    Experiment(m, tmp_path, argparse.Namespace(**base), progress=False).check_settings()
    Experiment(m, tmp_path, argparse.Namespace(**base, lengths=[9]), progress=False).check_settings()
    with pytest.raises(InterpError, match="window=256"):
        Experiment(m, tmp_path, argparse.Namespace(**{**base, "window": 64}), progress=False).check_settings()
