"""The HF, TransformerLens and nnsight backends see the same attention on the real model."""

import pytest
import torch

import interp

pytestmark = pytest.mark.slow
PROMPTS = ["Ann loves pie. Bob loves tea. Who loves pie?", "The cat sat on the mat."]
LAYERS = [0, 14, 29]


@pytest.fixture(scope="module")
def reference(smollm2):
    batch = smollm2.encode(PROMPTS)
    with interp.capture(smollm2, patterns=LAYERS, z=LAYERS, resid_post=LAYERS) as rec:
        logits = smollm2(**batch).logits
    return batch, rec, logits


def test_transformer_lens_bridge_gives_the_same_patterns(reference):
    batch, rec, _ = reference
    tl = interp.load("smollm2", backend="tl")
    assert tl.bridge is not None and tl.hf.config._attn_implementation == "eager"
    with interp.capture(tl, patterns=LAYERS, z=LAYERS, resid_post=LAYERS) as tl_rec:
        tl.bridge(batch["input_ids"], attention_mask=batch["attention_mask"])
    rows = batch["attention_mask"].bool()
    for layer in LAYERS:
        torch.testing.assert_close(tl_rec.patterns[layer] * rows[:, None, :, None],
                                   rec.patterns[layer] * rows[:, None, :, None], atol=1e-5, rtol=0)
        torch.testing.assert_close(tl_rec.z[layer][rows], rec.z[layer][rows], atol=1e-4, rtol=0)
        torch.testing.assert_close(tl_rec.resid_post[layer][rows], rec.resid_post[layer][rows], atol=1e-3,
                                   rtol=1e-4)


def test_nnsight_trace_and_interp_capture_compose(reference):
    batch, rec, logits = reference
    nn_model = interp.load("smollm2", backend="nnsight")
    with interp.capture(nn_model, patterns=LAYERS) as nn_rec:
        with nn_model.nnsight.trace(batch["input_ids"], attention_mask=batch["attention_mask"]):
            saved = nn_model.nnsight.lm_head.output.save()
    rows = batch["attention_mask"].bool()
    for layer in LAYERS:
        torch.testing.assert_close(nn_rec.patterns[layer], rec.patterns[layer], atol=1e-5, rtol=0)
    torch.testing.assert_close(saved[rows], logits[rows], atol=1e-4, rtol=0)
