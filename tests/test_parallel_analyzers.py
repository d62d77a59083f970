"""torchrun runs (2 CPU ranks, gloo) of the binding sweep, saliency and few-shot scoring, and of
`interp binding|saliency|calibrate`, equal one process."""

import json
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "scan"))
from test_parallel_runs import check, interp_cmd, torchrun  # noqa: E402
from tiny_scan import save_tiny  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(save_tiny(tmp_path_factory.mktemp("tiny")))


def same(a, b) -> bool:
    """Exact equality through nested dicts / lists / dataclasses, tensors bit for bit."""
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.fast
def test_analyzers_two_ranks_equal_one_and_bad_setups_fail(tiny, tmp_path):
    import parallel_analyzers_job

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun's ranks (OMP_NUM_THREADS=1): the same float reduction order
    try:
        alone = parallel_analyzers_job.run(tiny)
    finally:
        torch.set_num_threads(threads)
    check(torchrun(HERE / "parallel_analyzers_job.py", tiny, tmp_path / "two.pt"))
    two = torch.load(tmp_path / "two.pt", weights_only=False)
    bad = two.pop("bad")
    for key in alone:
        assert same(two[key], alone[key]), key
    assert len(alone["reports"]) == 3 and alone["logprobs"].shape == (10, 2)
    assert alone["sweeps"][3][0].shape == (2, 5, 3) and alone["sweeps"][4][0].shape == (2, 4, 4)
    # the merge is in unit order: a swapped pair of batches is told apart
    assert not torch.equal(alone["logprobs"][:3], alone["logprobs"][3:6])
    assert "2 ranks but only 1 batches of 8 counterfactual pairs" in bad["binding"]
    assert "2 ranks but only 1 inputs" in bad["saliency"]
    assert "ranks [1]" in bad["binding_same"] and "binding settings" in bad["binding_same"]
    assert "ranks [1]" in bad["saliency_same"] and "saliency settings" in bad["saliency_same"]


CLI = {
    "binding": (["--groups", "3,4", "--pairs", "4", "--batch-size", "2", "--accuracy-per-position", "1",
                 "--no-figures"], ["binding.json"]),
    "saliency": (["--input", "The cat sat on the", "--input", "One two three", "--input", "Water boils at",
                  "--max-new-tokens", "3"], ["agreement.json"]),
    "calibrate": (["--task", "sst2", "--shots", "2", "--dev", "2", "--test", "14", "--batch-size", "4",
                   "--heads", "1.0,2.1", "--no-progress"], ["report.json"]),
    # in a scan, binding and saliency are one unit each (rank 0's); their nested splits run locally
    "scan": (["--analyses", "binding,saliency", "--quiet", "--no-report", "--set", "binding.per_position=1",
              "--set", "binding.accuracy_per_position=1", "--set", "saliency.max_new_tokens=2"],
             ["scan.json"]),
}


@pytest.mark.fast
@pytest.mark.parametrize("name", list(CLI))
def test_cli_under_torchrun_writes_what_one_process_writes(tiny, tmp_path, name):
    rest, outputs = CLI[name]
    check(interp_cmd(name, tiny, *rest, "--out", tmp_path / "alone", n=None))
    check(interp_cmd(name, tiny, *rest, "--out", tmp_path / "two"))
    for file in outputs:
        alone, two = (json.loads((tmp_path / d / file).read_text()) for d in ("alone", "two"))
        for doc in (alone, two):
            doc.pop("seconds", None)  # calibrate: wall time
            doc.pop("command", None)  # binding: names its own --out
        assert two == alone, file
    if name == "saliency":  # the raw maps too, and the figures
        alone, two = (torch.load(tmp_path / d / "reports.pt", weights_only=False) for d in ("alone", "two"))
        assert same(two, alone) and len(two) == 3
        assert (tmp_path / "two" / "heads.html").exists() and (tmp_path / "two" / "token.html").exists()
