"""`Stats` through the capture engine equals statistics read off HF eager `output_attentions` patterns."""

import pytest
import torch
from tiny import padded_batch, tiny_model

import interp
from interp.capture.stats import Stats
from interp.errors import IndexOutOfRangeError, InterpError

FAMILIES = ["llama", "gpt2", "gpt_neox", "gemma2", "qwen2"]


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.fast
@pytest.mark.parametrize("family", FAMILIES)
def test_stats_equal_eager_patterns_on_padded_batch(family):
    model = tiny_model(family)
    batch = padded_batch(lengths=(7, 4, 9))
    real = batch["attention_mask"].bool()  # [batch, query]: rows of real tokens
    st = Stats(spans=[(0, 2), (5, 7)], first_tokens=1, top_k=3)
    with interp.capture(model, probes=[st]):
        model(**batch)
    model.set_attn_implementation("eager")
    with torch.no_grad():
        patterns = model(**batch, output_attentions=True).attentions
    first_real = (~real).sum(1)  # left padding: index of each prompt's first real token
    for layer, p in enumerate(patterns):
        rows, cols = st.rows[layer], st.columns[layer]
        sel = real[:, None, :].expand_as(rows.entropy)
        close(rows.entropy[sel], -torch.special.xlogy(p, p).sum(-1)[sel])
        assert torch.equal(rows.argmax[sel], p.argmax(-1)[sel])
        close((rows.max_score - rows.lse)[sel], p.max(-1).values.log()[sel])  # log p_max = max score - lse
        close(rows.span_mass[..., 0][sel], p[..., 0:2].sum(-1)[sel])
        close(rows.span_mass[..., 1][sel], p[..., 5:7].sum(-1)[sel])
        sink = torch.stack([p[b, :, :, first_real[b]] for b in range(p.shape[0])])
        close(rows.span_mass[..., 2][sel], sink[sel])
        close(rows.topk_prob[sel], p.topk(3, dim=-1).values[sel])
        p_real = p * real[:, None, :, None]
        close(cols.total, p_real.sum(2))
        assert torch.equal(cols.count, (p_real[:, 0] > 0).sum(1))
        close(cols.mean, p_real.sum(2) / (p_real[:, :1] > 0).sum(2).clamp(min=1))


@pytest.mark.fast
def test_decoding_steps_concatenate_like_one_forward():
    model = tiny_model("llama")
    batch = padded_batch(lengths=(6, 9))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    whole = Stats(top_k=2)
    with interp.capture(model, probes=[whole]):
        model(**batch)
    steps = Stats(top_k=2)
    with interp.capture(model, probes=[steps]):
        out = model(input_ids=ids[:, :-2], attention_mask=mask[:, :-2], use_cache=True)
        for i in (2, 1):
            n = ids.shape[1] - i
            out = model(input_ids=ids[:, n:n + 1], attention_mask=mask[:, :n + 1],
                        past_key_values=out.past_key_values, use_cache=True)
    for layer in (0, 1):
        a, b = whole.rows[layer], steps.rows[layer]
        close(a.lse, b.lse)
        close(a.entropy, b.entropy)
        assert torch.equal(a.topk_index, b.topk_index)
        close(whole.columns[layer].total, steps.columns[layer].total)
        assert torch.equal(whole.columns[layer].count, steps.columns[layer].count)


@pytest.mark.fast
def test_bad_layer_and_options_raise():
    model = tiny_model("llama")
    with pytest.raises(IndexOutOfRangeError):
        with interp.capture(model, probes=[Stats(layers=[7])]):
            pass
    with pytest.raises(InterpError, match="must be >= 0"):
        with interp.capture(model, probes=[Stats(top_k=-1)]):
            pass
