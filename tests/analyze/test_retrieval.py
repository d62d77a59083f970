"""Retrieval scores: streaming batched path vs the one-at-a-time eager `output_attentions` reference."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from tiny import copying_llama

from interp.analyze.retrieval import (
    RetrievalScores,
    TrialResult,
    load_checkpoint,
    retrieval_scores,
    run_trials,
    scores_from_results,
)
from interp.errors import InterpError
from interp.tasks.niah import NEEDLES, Needle, NiahConfig, Trial, build_trials

ROOT = Path(__file__).resolve().parents[2]


def _load_reference():
    spec = importlib.util.spec_from_file_location("bench_retrieval", ROOT / "benchmarks" / "retrieval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.eager_reference


eager_reference = _load_reference()


@pytest.fixture(scope="module")
def tiny():
    return copying_llama()


def tiny_trials(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    needle = Needle("the code is 7", "What is the code?", "7", "The code is")
    trials = []
    for i in range(n):
        length = 12 + 3 * i  # different lengths: the batch is left-padded
        ids = torch.randint(3, 12, (length,), generator=g).tolist()  # few distinct ids: copies happen
        trials.append(Trial(f"t{i}", needle, length, 0.5, ids, (2, length - 2), (2, length - 2)))
    return trials


@pytest.mark.fast
def test_streaming_scores_equal_eager_reference_tiny(tiny):
    trials = tiny_trials()
    got = {
        r.id: r
        for batch in run_trials(tiny, trials, batch_size=3, max_new_tokens=6, score=True, progress=False)
        for r in batch
    }
    total = 0.0
    for t in trials:
        text, recall, ref = eager_reference(tiny, t, max_new_tokens=6)
        assert got[t.id].output == text and got[t.id].recall == recall
        torch.testing.assert_close(got[t.id].scores, ref, rtol=0, atol=1e-6)
        total += ref.sum().item()
    assert total > 0  # some heads did copy, so the comparison is not between zeros


@pytest.mark.fast
def test_scores_summary_and_official_json_roundtrip(tmp_path):
    per_trial = torch.zeros(4, 3, 2)
    per_trial[:, 2, 1] = torch.tensor([0.5, 0.25, 0.0, 0.25])  # mean 0.25
    per_trial[:2, 0, 0] = 0.1  # mean 0.05
    s = RetrievalScores(per_trial, ["a", "b", "c", "d"], n_trials=8, model="tiny")
    assert s.success_rate == 0.5
    assert s.fraction_over(0.1) == pytest.approx(1 / 6)
    assert [(l, h) for l, h, _ in s.top(2)] == [(2, 1), (0, 0)]
    s.save(tmp_path / "scores.json")
    data = json.loads((tmp_path / "scores.json").read_text())
    assert set(data) == {f"{l}.{h}" for l in range(3) for h in range(2)} and data["2.1"] == [
        0.5,
        0.25,
        0.0,
        0.25,
    ]
    back = RetrievalScores.from_json(tmp_path / "scores.json")
    torch.testing.assert_close(back.per_trial, per_trial)
    s.save(tmp_path / "official.json", official=True)  # the paper's code spells keys "L-H"; both read back
    assert "2-1" in json.loads((tmp_path / "official.json").read_text())
    torch.testing.assert_close(RetrievalScores.from_json(tmp_path / "official.json").per_trial, per_trial)
    fig = s.figure()
    assert fig.data[0].type == "heatmap" and len(fig.data[0].z) == 3


@pytest.mark.fast
def test_bad_input(tmp_path, tiny):
    s = RetrievalScores(torch.zeros(1, 2, 3), ["a"], 1)
    with pytest.raises(InterpError, match="6 heads"):
        s.top(7)
    with pytest.raises(InterpError, match="does not exist"):
        RetrievalScores.from_json(tmp_path / "nope.json")
    with pytest.raises(InterpError, match="head labels .L.H."):
        RetrievalScores.from_json({"layer3": [0.1]})
    with pytest.raises(InterpError, match="different lengths"):
        RetrievalScores.from_json({"0-0": [0.1], "0-1": [0.1, 0.2]})
    with pytest.raises(InterpError, match="no trials"):
        retrieval_scores(tiny, [])
    with pytest.raises(InterpError, match="another model"):
        scores_from_results([TrialResult("x", "7", 1.0, torch.zeros(5, 5))], n_layers=2, n_heads=4)


@pytest.mark.fast
def test_interrupted_scan_resumes_from_saved_trials(tiny, tmp_path, monkeypatch):
    trials = tiny_trials(4, seed=1)
    ckpt = tmp_path / "trials.jsonl"
    retrieval_scores(tiny, trials[:2], batch_size=2, max_new_tokens=4, checkpoint=ckpt, progress=False)
    with open(ckpt, "a") as f:
        f.write('{"id": "t2", "outp')  # a line torn by the interruption
    seen = []
    original = run_trials

    def counting(model, todo, **kw):
        seen.extend(t.id for t in todo)
        return original(model, todo, **kw)

    monkeypatch.setattr("interp.analyze.retrieval.run_trials", counting)
    retrieval_scores(tiny, trials, batch_size=2, max_new_tokens=4, checkpoint=ckpt, progress=False)
    assert seen == ["t2", "t3"]  # only the unfinished trials ran again
    resumed = load_checkpoint(ckpt)
    assert sorted(resumed) == ["t0", "t1", "t2", "t3"]
    fresh = {
        r.id: r
        for b in original(tiny, trials, batch_size=4, max_new_tokens=4, score=True, progress=False)
        for r in b
    }
    for i, r in resumed.items():
        assert r.output == fresh[i].output
        torch.testing.assert_close(r.scores, fresh[i].scores)


@pytest.mark.slow
def test_streaming_scores_equal_eager_reference_smollm2(smollm2):
    config = NiahConfig(lengths=(250,), depths=(0.3, 0.8), needles=NEEDLES[:2])
    trials = build_trials(smollm2.tokenizer, config, n_ctx=smollm2.adapter.n_ctx)
    got = {
        r.id: r
        for b in run_trials(smollm2, trials, batch_size=4, max_new_tokens=6, score=True, progress=False)
        for r in b
    }
    total = 0.0
    for t in trials:
        text, recall, ref = eager_reference(smollm2, t, max_new_tokens=6)
        assert got[t.id].output == text
        torch.testing.assert_close(got[t.id].scores, ref, rtol=0, atol=1e-5)
        total += ref.sum().item() * (recall > 0.5)
    assert total > 0  # recalled trials with copying heads: the comparison has substance
