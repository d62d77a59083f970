"""`interp scan --device-map`: a layer offloaded to disk by accelerate gives the plain run's scan.

On a machine without GPUs the devices accelerate can spread over are the CPU and the disk; with
two GPUs the same map with "0"/"1" in place of "cpu" splits the layers over them.
"""

import json

import pytest
import torch

from interp.cli import main
from interp.errors import InterpError
from interp.models.load import device_map_kwargs

SETS = ["--set", "sinks.n_prompts=2", "--set", "sinks.words=30", "--set", "sinks.length=16", "--set",
        "sinks.batch_size=2", "--set", "heads.n_random=2", "--set", "heads.half_len=8", "--set",
        "heads.batch_size=2", "--set", "heads.text_tokens=16", "--set", "heads.n_text=2"]
MAP = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
       "model.layers.1": "disk", "model.layers.2": "cpu", "model.norm": "cpu", "lm_head": "cpu"}


@pytest.mark.fast
def test_scan_with_a_layer_on_disk_matches_plain(tiny_dir, tmp_path, caplog):
    (tmp_path / "map.json").write_text(json.dumps(MAP))
    args = ["scan", str(tiny_dir), "--analyses", "heads,sinks", "--quiet", "--no-report", *SETS]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    assert main([*args, "--out", str(tmp_path / "map"), "--device-map", str(tmp_path / "map.json"),
                 "--offload-folder", str(tmp_path / "off")]) == 0
    # layer 1 sits on the meta device and is read from disk
    assert "offloaded to the" in caplog.text and "disk" in caplog.text
    plain, mapped = (json.loads((tmp_path / d / "scan.json").read_text()) for d in ("plain", "map"))
    for name in ("heads", "sinks"):
        for key, metric in plain["analyses"][name]["metrics"].items():
            torch.testing.assert_close(torch.tensor(mapped["analyses"][name]["metrics"][key]["scores"]),
                                       torch.tensor(metric["scores"]), atol=1e-5, rtol=0)


@pytest.mark.fast
def test_device_map_flags_are_checked():
    assert device_map_kwargs("auto", "0=1GiB,cpu=2GiB", "off") == {
        "device_map": "auto", "max_memory": {0: "1GiB", "cpu": "2GiB"}, "offload_folder": "off"}
    with pytest.raises(InterpError, match="needs --device-map"):
        device_map_kwargs(None, "0=1GiB")
    with pytest.raises(InterpError, match="DEVICE=SIZE"):
        device_map_kwargs("auto", "lots")
    with pytest.raises(InterpError, match="JSON file"):
        device_map_kwargs("no-such-map.json")
