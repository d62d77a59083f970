"""Captured attention equals HF eager `output_attentions`, on every supported family."""

import pytest
import torch
from tiny import DECODER_ONLY, eager_twin, padded_batch, tiny_model, tiny_t5, tiny_whisper

import interp
from interp import Patterns
from interp.masks import visible_keys

pytestmark = pytest.mark.fast
ATOL = 1e-5


def _real_rows(mask: torch.Tensor) -> torch.Tensor:
    return mask.bool()[:, None, :, None]


@pytest.mark.parametrize("family", DECODER_ONLY)
def test_patterns_equal_eager_on_left_padded_batch(family):
    model = tiny_model(family)
    eager = eager_twin(model, lambda attn: tiny_model(family, attn))
    batch = padded_batch()
    with torch.no_grad():
        ref = eager(**batch, output_attentions=True)
        plain = model(**batch).logits
    with interp.capture(model, patterns=True) as rec:
        logits = model(**batch).logits
    rows = _real_rows(batch["attention_mask"])
    for layer, expected in enumerate(ref.attentions):
        torch.testing.assert_close(rec.patterns[layer] * rows, expected * rows, atol=ATOL, rtol=0)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(logits[real], plain[real], atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", DECODER_ONLY)
def test_patterns_equal_eager_during_kv_cached_generation(family):
    model = tiny_model(family)
    eager = eager_twin(model, lambda attn: tiny_model(family, attn))
    batch = padded_batch(seed=1)
    args = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    with interp.capture(model, patterns=True) as rec:
        tokens = model.generate(**batch, **args)
    ref = eager.generate(**batch, **args, output_attentions=True, return_dict_in_generate=True)
    assert torch.equal(tokens, ref.sequences), "capturing changed what the model generates"
    assert rec.n_forward == 4
    mask = batch["attention_mask"]
    for step, step_attentions in enumerate(ref.attentions):
        for layer, expected in enumerate(step_attentions):
            got = rec.patterns.steps(layer)[step]
            grown = torch.cat([mask, torch.ones(len(mask), step, dtype=mask.dtype)], 1)
            rows = _real_rows(grown[:, -got.shape[2]:])
            torch.testing.assert_close(got * rows, expected * rows, atol=ATOL, rtol=0)
    # the concatenated view is the attention of the whole sequence, on the absolute key axis
    full = rec.patterns[0]
    assert full.shape[-2:] == (tokens.shape[1] - 1, tokens.shape[1] - 1)


def test_query_and_head_selection_slices_the_full_pattern():
    model = tiny_model("llama")
    batch = padded_batch()
    with interp.capture(model, patterns=True) as full:
        model(**batch)
    with interp.capture(model, patterns=Patterns(layers=[1], heads=[3, 1], queries=-1)) as part:
        model(**batch)
    assert list(part.patterns) == [1]
    torch.testing.assert_close(part.patterns[1], full.patterns[1][:, [3, 1], -1:], atol=1e-7, rtol=0)


def test_z_reproduces_the_output_projection():
    model = tiny_model("llama")
    batch = padded_batch()
    outputs = {}
    o_proj = model.model.layers[1].self_attn.o_proj
    handle = o_proj.register_forward_hook(lambda m, i, o: outputs.setdefault(1, o))
    try:
        with interp.capture(model, z=[1]) as rec:
            model(**batch)
    finally:
        handle.remove()
    z = rec.z[1]
    assert z.shape == (3, 9, 4, 8)
    o_proj = model.model.layers[1].self_attn.o_proj
    torch.testing.assert_close(o_proj(z.flatten(2)), outputs[1], atol=ATOL, rtol=0)


def test_q_k_v_are_the_tensors_attention_sees():
    model = tiny_model("llama")
    batch = padded_batch()
    with interp.capture(model, q=[0], k=[0], v=[0], patterns=[0]) as rec:
        model(**batch)
    q, k = rec.q[0], rec.k[0]
    assert q.shape == (3, 4, 9, 8) and k.shape == (3, 2, 9, 8)
    scores = q @ k.repeat_interleave(2, dim=1).transpose(-1, -2) * 8 ** -0.5
    visible = visible_keys(None, batch=3, q_len=9, k_len=9, is_causal=True)
    visible = visible & batch["attention_mask"].bool()[:, None, :]
    weights = scores.masked_fill(~visible[:, None], float("-inf")).softmax(-1).nan_to_num(0)
    rows = _real_rows(batch["attention_mask"])
    torch.testing.assert_close(weights * rows, rec.patterns[0] * rows, atol=ATOL, rtol=0)


def test_whisper_encoder_decoder_and_cross_attention():
    model = tiny_whisper()
    eager = eager_twin(model, tiny_whisper)
    features, decoder_ids = torch.randn(2, 8, 32), torch.randint(3, 96, (2, 5))
    with torch.no_grad():
        ref = eager(input_features=features, decoder_input_ids=decoder_ids, output_attentions=True)
    probes = [Patterns(stack="encoder"), Patterns(stack="cross")]
    with interp.capture(model, patterns=True, probes=probes) as rec:
        logits = model(input_features=features, decoder_input_ids=decoder_ids).logits
    encoder, cross = (p.data for p in probes)
    for layer in range(2):
        torch.testing.assert_close(rec.patterns[layer], ref.decoder_attentions[layer], atol=ATOL, rtol=0)
        torch.testing.assert_close(encoder[("encoder", layer)], ref.encoder_attentions[layer], atol=ATOL,
                                   rtol=0)
        torch.testing.assert_close(cross[("cross", layer)], ref.cross_attentions[layer], atol=ATOL, rtol=0)
    torch.testing.assert_close(logits, ref.logits, atol=ATOL, rtol=0)


def test_t5_relative_position_bias_and_padding():
    model = tiny_t5()
    eager = eager_twin(model, tiny_t5)
    batch = padded_batch(lengths=(6, 4))
    decoder_ids = torch.randint(1, 96, (2, 5))
    with torch.no_grad():
        ref = eager(**batch, decoder_input_ids=decoder_ids, output_attentions=True)
    probes = [Patterns(stack="encoder"), Patterns(stack="cross")]
    with interp.capture(model, patterns=True, probes=probes) as rec:
        logits = model(**batch, decoder_input_ids=decoder_ids).logits
    rows = _real_rows(batch["attention_mask"])
    for layer in range(2):
        torch.testing.assert_close(rec.patterns[layer], ref.decoder_attentions[layer], atol=ATOL, rtol=0)
        torch.testing.assert_close(probes[0].data[("encoder", layer)] * rows,
                                   ref.encoder_attentions[layer] * rows, atol=ATOL, rtol=0)
        torch.testing.assert_close(probes[1].data[("cross", layer)], ref.cross_attentions[layer], atol=ATOL,
                                   rtol=0)
    torch.testing.assert_close(logits, ref.logits, atol=ATOL, rtol=0)


def test_patterns_can_be_kept_in_a_smaller_dtype_on_another_device():
    model = tiny_model("llama")
    batch = padded_batch()
    with interp.capture(model, patterns=True) as full:
        model(**batch)
    with interp.capture(model, patterns=Patterns(dtype=torch.float16, device="cpu")) as small:
        model(**batch)
    assert small.patterns[0].dtype == torch.float16
    torch.testing.assert_close(small.patterns[0].float(), full.patterns[0], atol=1e-3, rtol=0)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])
def test_streaming_stats_supply_the_same_attention_output(family):
    """`Stats` computes each layer's output in the same pass as its statistics; logits must not move."""
    model = tiny_model(family)
    batch = padded_batch()
    with torch.no_grad():
        plain = model(**batch).logits
    with interp.capture(model, stats=True) as rec:
        logits = model(**batch).logits
    assert len(rec.stats.rows) == 2
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(logits[real], plain[real], atol=ATOL, rtol=0)
