"""Few-shot splits, prompts, label scoring (vs unpadded single-prompt forwards) and the CLI's errors."""

import pytest
import torch

from interp.cli import main
from interp.errors import InterpError
from interp.tasks.fewshot import (
    TASKS,
    Example,
    UnknownTaskError,
    bootstrap_ci,
    evaluate,
    get_task,
    label_token_ids,
    make_split,
)


@pytest.mark.fast
@pytest.mark.parametrize("name", list(TASKS))
def test_splits_are_disjoint_balanced_and_deterministic(name, data):
    n_labels = len(TASKS[name].labels)
    split = make_split(name, shots=2 * n_labels, dev=30, test=40, seed=3, data_dir=data / "fewshot")
    assert len(split.demos) == 2 * n_labels and len(split.dev) == 30 and len(split.test) == 40
    assert sorted(e.label for e in split.demos) == sorted(list(range(n_labels)) * 2)
    demos, dev, test = ({(e.text, e.label) for e in s} for s in (split.demos, split.dev, split.test))
    assert not (demos & dev) and not (demos & test) and not (dev & test)
    again = make_split(name, shots=2 * n_labels, dev=30, test=40, seed=3, data_dir=data / "fewshot")
    assert again.demos == split.demos and again.test == split.test
    other = make_split(name, shots=2 * n_labels, dev=30, test=40, seed=4, data_dir=data / "fewshot")
    assert other.test != split.test


@pytest.mark.fast
def test_prompt_format():
    task = TASKS["sst2"]
    p = task.prompt([Example("fun .", 1), Example("dull .", 0)], Example("meh .", 0))
    assert p == ("Review: fun .\nSentiment: positive\n\nReview: dull .\nSentiment: negative\n\n"
                 "Review: meh .\nSentiment:")
    assert TASKS["trec"].prompt([], Example("Who?", 2)).startswith("Classify the questions")


@pytest.mark.fast
def test_label_tokens_must_differ():
    class Tok:  # every word starts with the same token
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [7, len(text)]}

    with pytest.raises(InterpError, match="share a first token"):
        label_token_ids(Tok(), TASKS["sst2"])


@pytest.mark.fast
def test_bootstrap_interval_covers_the_mean():
    values = (torch.rand(400, generator=torch.Generator().manual_seed(0)) < 0.7).float()
    lo, hi = bootstrap_ci(values, n_boot=1000)
    m = values.mean().item()
    assert lo < m < hi and 0.02 < hi - lo < 0.15  # ~ 2 x 1.96 x sqrt(.21 / 400) = 0.09


@pytest.mark.fast
def test_bad_input(tmp_path, capsys):
    with pytest.raises(UnknownTaskError, match="choose one of sst2, agnews, trec"):
        get_task("mnli")
    with pytest.raises(InterpError, match="not found"):
        make_split("sst2", shots=2, dev=2, test=2, data_dir=tmp_path)
    with pytest.raises(InterpError, match="test >= 1"):
        make_split("sst2", shots=2, dev=2, test=0, data_dir=tmp_path)
    assert main(["calibrate", "smollm2", "--task", "mnli"]) == 2
    assert "unknown few-shot task 'mnli'" in capsys.readouterr().err
    assert main(["calibrate", "smollm2", "--task", "sst2", "--beta", "1.5"]) == 2
    assert "beta=1.5 is outside [0, 1]" in capsys.readouterr().err
    assert main(["calibrate", "smollm2", "--task", "sst2", "--dev", "0"]) == 2
    assert "--dev >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_batched_scores_equal_single_prompt_forwards(smollm2, data):
    split = make_split("sst2", shots=2, dev=0, test=5, seed=1, data_dir=data / "fewshot")
    scores = evaluate(smollm2, split.task, split.demos, split.test, batch_size=5)
    ids = label_token_ids(smollm2.tokenizer, split.task)
    for i, ex in enumerate(split.test):  # reference: one unpadded prompt at a time
        enc = smollm2.tokenizer(split.task.prompt(split.demos, ex), return_tensors="pt")
        with torch.no_grad():
            logits = smollm2.hf(**enc).logits[0, -1]
        torch.testing.assert_close(scores.logprobs[i], torch.log_softmax(logits, -1)[ids], atol=2e-4, rtol=0)


@pytest.mark.slow
def test_cli_end_to_end_with_fixed_heads(tmp_path, data, capsys):
    args = ["calibrate", "smollm2", "--task", "sst2", "--shots", "2", "--dev", "0", "--test", "6", "--heads",
            "12:3,20:1", "--data", str(data / "fewshot"), "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    import json

    report = json.loads((tmp_path / "report.json").read_text())
    assert report["heads"] == [[12, 3], [20, 1]] and 0 <= report["calibrated"]["accuracy"] <= 1
    lo, hi = report["uncalibrated"]["ci95"]
    assert lo <= report["uncalibrated"]["accuracy"] <= hi
    saved = json.loads((tmp_path / "calibration.json").read_text())
    assert saved["model"]["n_heads"] == 9 and saved["rule"] == "prefill"
    assert main(args[:10] + ["--calibration", str(tmp_path / "calibration.json"), "--data",
                            str(data / "fewshot"), "--out", str(tmp_path / "again"), "--no-progress"]) == 0
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert again["calibrated"] == report["calibrated"]
