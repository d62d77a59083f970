"""Sink metrics from streamed column statistics vs Gu et al.'s formula on full eager patterns."""

import pytest
import torch
from tiny import padded_batch, tiny_model

from interp.analyze.sinks import SinkConfig, find_sinks, passages
from interp.errors import IndexOutOfRangeError, InterpError


def reference_alphas(model, batch):
    """alpha_k = sum_{t >= k} A[t, k] / (T - k + 1) on each prompt's real tokens, from eager patterns."""
    with torch.no_grad():
        out = model(**batch, output_attentions=True)
    result = []  # per prompt: [layer, head, T]
    for p, mask in enumerate(batch["attention_mask"].bool()):
        real = torch.nonzero(mask)[:, 0]
        per_layer = []
        for att in out.attentions:
            a = att[p][:, real][:, :, real].float()  # [head, T, T]
            T = a.shape[-1]
            per_layer.append(a.sum(1) / torch.arange(T, 0, -1))
        result.append(torch.stack(per_layer))
    return result


@pytest.mark.fast
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_first_and_hidden_sinks_match_eager_formula(family):
    model = tiny_model(family, attn="eager")
    for layer in model.modules():  # sharpen attention so that some columns pass tau
        for name in ("q_proj", "c_attn"):
            if hasattr(layer, name):
                getattr(layer, name).weight.data *= 5.0
    batch = padded_batch(seed=4, lengths=(9, 5, 12, 7))
    config = SinkConfig(tau=0.15, length=None, batch_size=3)
    report = find_sinks(model, batch, config, progress=False)
    ref = reference_alphas(model, batch)
    first = torch.stack([r[..., 0] for r in ref])
    torch.testing.assert_close(report.first, first, atol=1e-5, rtol=1e-5)
    n_hidden = torch.stack([(r[..., 1:] > 0.15).sum(-1) for r in ref])
    assert torch.equal(report.n_hidden, n_hidden)
    assert report.n_hidden.sum() > 0, "the test needs hidden sinks"
    assert len(report.hidden) == int(n_hidden.sum())
    for s in report.hidden:  # positions are relative to the first real token
        assert abs(ref[s.prompt][s.layer, s.head, s.position] - s.alpha) < 1e-5
    for eps in (0.1, 0.3, 0.5):
        assert report.sink_rate(eps) == pytest.approx((first > eps).float().mean().item())
    seen_by_4 = sum(int((r[..., 1:r.shape[-1] - 3] > 0.15).sum()) for r in ref)  # keys with >= 4 queries
    assert sum(t["hits"] for t in report.token_table(10**6, min_queries=4)) == seen_by_4
    table = report.token_table(3)
    assert table and table[0]["hits"] >= table[-1]["hits"]
    fig = report.figure()
    assert len(fig.data) == 3
    assert set(report.to_json()) >= {"sink_rate", "tokens", "hidden_rate"}


@pytest.mark.fast
def test_bad_input():
    with pytest.raises(InterpError, match="tau"):
        SinkConfig(tau=1.5)
    with pytest.raises(InterpError, match="length"):
        SinkConfig(length=1)
    model = tiny_model("llama")
    with pytest.raises(IndexOutOfRangeError):
        find_sinks(model, padded_batch(), SinkConfig(layers=[5]), progress=False)
    with pytest.raises(InterpError, match="no tokenizer"):
        find_sinks(model, ["text"], progress=False)


@pytest.mark.slow
def test_smollm2_has_first_token_sinks(smollm2, data):
    prompts = passages(4, path=data / "haystack" / "heldout-frankenstein.txt")
    report = find_sinks(smollm2, prompts, SinkConfig(length=64), progress=False)
    assert report.first.shape == (4, 30, 9)
    assert min(report.n_tokens) == 64
    assert report.sink_rate(0.3) > 0.5  # the first token is a sink for most heads (Gu et al.)
