"""Every registered analysis runs through the scan on a tiny model and yields [layer][head] maps."""

import pytest
import torch

import interp
from interp.scan import run_scan

TINY = {
    "sinks": {"n_prompts": 4, "words": 30, "length": 16, "batch_size": 2},
    "retrieval": {"lengths": [120], "depths": [0.5], "n_needles": 2, "batch_size": 2, "max_new_tokens": 3},
    "saliency": {"prompts": ["The cat sat on the", "One two three"], "max_new_tokens": 2},
    "binding": {"n": 3, "per_position": 1, "accuracy_per_position": 1, "batch_size": 8},
}


@pytest.mark.fast
@pytest.mark.parametrize("name", list(TINY))
def test_analysis_yields_per_layer_maps(name, tiny_dir, tmp_path):
    doc = run_scan(str(tiny_dir), analyses=name, out=tmp_path, config={name: TINY[name]}, progress=False,
               examples=False, report=False)
    result = doc["analyses"][name]
    assert result["primary"] in result["metrics"]
    for metric in result["metrics"].values():
        scores = torch.tensor(metric["scores"])
        width = len(metric["columns"]) if metric.get("columns") else 4
        assert scores.shape == (3, width) and torch.isfinite(scores).all()


@pytest.mark.fast
def test_sinks_adapter_matches_the_analyzer(tiny_dir, tmp_path):
    from interp.analyze.sinks import SinkConfig, find_sinks, passages

    cfg = TINY["sinks"]
    doc = run_scan(str(tiny_dir), analyses="sinks", out=tmp_path, config={"sinks": cfg}, progress=False,
               examples=False, report=False)
    prompts = passages(cfg["n_prompts"], words=cfg["words"], seed=0)
    direct = find_sinks(interp.load(str(tiny_dir)), prompts, SinkConfig(epsilons=(0.3,), length=cfg["length"],
                                                                         batch_size=cfg["batch_size"]),
                        progress=False)
    got = torch.tensor(doc["analyses"]["sinks"]["metrics"]["first_token_alpha"]["scores"])
    torch.testing.assert_close(got, direct.first.mean(0), atol=1e-6, rtol=1e-5)
