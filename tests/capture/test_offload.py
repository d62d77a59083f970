"""Capture works when accelerate spreads layers over devices, with some offloaded to disk."""

import pytest
import torch
from tiny import padded_batch, tiny_model

import interp

pytestmark = pytest.mark.fast

DEVICE_MAP = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
              "model.layers.1": "disk", "model.norm": "cpu", "lm_head": "cpu"}


def test_patterns_and_stats_with_a_layer_offloaded_to_disk(tmp_path):
    tiny_model("llama").save_pretrained(tmp_path / "model")
    plain = interp.load(str(tmp_path / "model"))
    offloaded = interp.load(str(tmp_path / "model"), device_map=DEVICE_MAP,
                            offload_folder=str(tmp_path / "off"))
    # offloaded weights stay on the meta device and are streamed in from disk by accelerate's hooks
    assert offloaded.hf.model.layers[1].self_attn.q_proj.weight.device.type == "meta"
    assert offloaded.hf.model.layers[0].self_attn.q_proj.weight.device.type == "cpu"
    batch = padded_batch()
    results = []
    for model in (plain, offloaded):
        with interp.capture(model, patterns=True, stats=True, z=[1]) as rec:
            logits = model(**batch).logits
        results.append((rec, logits))
    (a, la), (b, lb) = results
    torch.testing.assert_close(lb, la, atol=1e-5, rtol=0)
    for layer in (0, 1):
        torch.testing.assert_close(b.patterns[layer], a.patterns[layer], atol=1e-6, rtol=0)
        torch.testing.assert_close(b.stats.rows[layer].entropy, a.stats.rows[layer].entropy, atol=1e-5,
                                   rtol=0)
    torch.testing.assert_close(b.z[1], a.z[1], atol=1e-6, rtol=0)
