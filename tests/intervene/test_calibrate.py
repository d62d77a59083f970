"""The ACT calibrator against a straightforward eager re-implementation of the paper's formula.

The reference below is registered as its own attention function: plain eager attention (repeat
the kv heads, add the float mask, softmax), then, for the calibrated heads, column means as the
official code computes them (column sum over the queries that see the key), first real token
excluded, sinks scaled by beta and the removed mass handed out with the ratios of the other keys.
It shares no code with `interp.intervene.calibrate`.
"""

import json

import pytest
import torch
from tiny import padded_batch, tiny_model
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

import interp
from interp.capture import Patterns
from interp.errors import IndexOutOfRangeError
from interp.intervene.calibrate import (
    Calibration,
    CalibrationError,
    calibrate,
    model_identity,
    parse_heads,
    rebalance,
)

pytestmark = pytest.mark.fast

BETA, TAU = 0.4, 0.1


class Reference:
    """Eager attention with ACT applied on `heads`; sinks found on the prefill and kept while decoding."""

    def __init__(self, heads, beta=BETA, tau=TAU):
        self.heads, self.beta, self.tau = heads, beta, tau
        self.sinks = {}  # layer -> {(b, h): set of absolute key positions}
        self.weights = {}  # layer -> last weights [b, h, q, k]

    def __call__(self, module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
        layer = module.layer_idx
        groups = query.shape[1] // key.shape[1]
        k = key.repeat_interleave(groups, dim=1).float()
        v = value.repeat_interleave(groups, dim=1).float()
        s = query.float() @ k.transpose(-1, -2) * scaling
        q_len, k_len = s.shape[-2:]
        if attention_mask is not None:
            s = s + attention_mask[..., :k_len].float()
            visible = attention_mask[:, 0, :, :k_len] > -1e30
        else:
            causal = torch.ones(q_len, k_len, dtype=torch.bool).tril(k_len - q_len)
            visible = causal[None].expand(s.shape[0], -1, -1)
        w = torch.softmax(s, -1) * visible[:, None]  # padding query rows: zeros
        prefill = k_len == q_len
        for b in range(w.shape[0]):
            first = int(visible[b, -1].int().argmax())
            for h in range(w.shape[1]):
                if (layer, h) not in self.heads:
                    continue
                a = w[b, h]
                if prefill:
                    col_mean = a.sum(0) / visible[b].sum(0).clamp(min=1)
                    found = {j for j in range(k_len) if col_mean[j] > self.tau and j != first}
                    self.sinks.setdefault(layer, {})[(b, h)] = found
                idx = sorted(self.sinks[layer][(b, h)])
                if not idx:
                    continue
                others = a.clone()
                others[:, idx] = 0
                ratios = others / others.sum(1, keepdim=True)
                available = a[:, idx].sum(1, keepdim=True) * (1 - self.beta)
                new = a.clone()
                new[:, idx] *= self.beta
                w[b, h] = torch.where(others.sum(1, keepdim=True) > 0, new + available * ratios, a)
        self.weights[layer] = w
        out = (w @ v).transpose(1, 2).to(query.dtype)
        return out, w


def run_reference(model, ref, **inputs):
    AttentionInterface.register("act_reference", ref)
    AttentionMaskInterface.register("act_reference", eager_mask)
    previous = model.config._attn_implementation
    model.set_attn_implementation("act_reference")
    try:
        with torch.no_grad():
            return model(**inputs)
    finally:
        model.set_attn_implementation(previous)


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


def _spiky(model):
    """Make sinks likely: random tiny models spread attention evenly, so sharpen the queries."""
    for layer in model.model.layers:
        layer.self_attn.q_proj.weight.data *= 6.0
    return model


@pytest.fixture(scope="module")
def spiky():
    return _spiky(tiny_model("llama", seed=1))


def test_rebalance_keeps_rows_and_scales_sinks():
    torch.manual_seed(0)
    w = torch.softmax(torch.randn(2, 3, 5, 7), -1)
    sinks = torch.rand(2, 3, 7) > 0.6
    out = rebalance(w, sinks, 0.3)
    torch.testing.assert_close(out.sum(-1), torch.ones(2, 3, 5))
    s = sinks[:, :, None].expand_as(w)
    torch.testing.assert_close(out[s], 0.3 * w[s])
    others = ~s  # non-sinks grow by one common factor per row
    ratio = torch.where(others, out / w, torch.nan)
    spread = ratio.nan_to_num(1.0).amax(-1) - torch.where(others, ratio, torch.inf).amin(-1).nan_to_num(1.0)
    has_rest = (others.any(-1)) & (s.any(-1))
    assert spread[has_rest].abs().max() < 1e-5


def test_no_heads_is_the_uncalibrated_model(llama):
    batch = padded_batch()
    plain = llama(**batch).logits
    with calibrate(llama, []):
        same = llama(**batch).logits
    real = batch["attention_mask"].bool()
    assert (plain - same)[real].abs().max() < 1e-6


@pytest.mark.parametrize("stream", [False, True])
def test_matches_eager_reference_on_padded_batch(spiky, stream):
    heads = [(0, 1), (0, 2), (1, 0), (1, 3)]
    batch = padded_batch(seed=3, lengths=(9, 5, 12))
    ref = Reference(set(heads))
    expected = run_reference(spiky, ref, **batch).logits
    assert any(ref.sinks[0].values()) and any(ref.sinks[1].values()), "the test needs hidden sinks to bite"
    recorder = Patterns(layers=[0, 1], heads=[1, 2, 3])
    with calibrate(spiky, heads, beta=BETA, tau=TAU, stream=stream, probes=[recorder]):
        got = spiky(**batch).logits
    real = batch["attention_mask"].bool()
    assert (expected - got)[real].abs().max() < 1e-5
    plain = spiky(**batch).logits
    assert (plain - got)[real].abs().max() > 1e-3  # the calibration changed something
    if not stream:  # recorded patterns are the calibrated ones, rows sum to 1
        for layer in (0, 1):
            pat = recorder.data[layer]
            want = ref.weights[layer][:, [1, 2, 3]]
            rows = real[:, None, :, None].expand_as(pat)
            assert (pat - want)[rows].abs().max() < 1e-5
            torch.testing.assert_close(pat.sum(-1)[:, :, real[0]][0],
                                       torch.ones_like(pat.sum(-1)[:, :, real[0]][0]))


def test_kv_cached_decoding_keeps_prefill_sinks(spiky):
    heads = [(0, 1), (1, 0), (1, 3)]
    batch = padded_batch(seed=5, lengths=(10, 6))
    ref = Reference(set(heads))
    out = run_reference(spiky, ref, **batch, use_cache=True)
    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    mask = torch.cat([batch["attention_mask"], torch.ones_like(nxt)], 1)
    step_ref = run_reference(spiky, ref, input_ids=nxt, attention_mask=mask,
                             past_key_values=out.past_key_values)
    recorder = Patterns(layers=[1], heads=[0, 3])
    with calibrate(spiky, heads, probes=[recorder]):
        first = spiky(**batch, use_cache=True)
        step = spiky(input_ids=nxt, attention_mask=mask, past_key_values=first.past_key_values)
    assert (first.logits[:, -1] - out.logits[:, -1]).abs().max() < 1e-5
    assert (step.logits - step_ref.logits).abs().max() < 1e-5
    plain = spiky(**batch, use_cache=True)
    plain_step = spiky(input_ids=nxt, attention_mask=mask, past_key_values=plain.past_key_values)
    assert (plain_step.logits - step.logits).abs().max() > 1e-3  # prefill sinks bite on the decoding step
    decode_rows = recorder.data.steps(1)[1]  # [batch, head, 1, key]
    assert (decode_rows - ref.weights[1][:, [0, 3]]).abs().max() < 1e-5
    torch.testing.assert_close(decode_rows.sum(-1), torch.ones(2, 2, 1))


def test_generate_runs_calibrated_and_batched(spiky):
    batch = padded_batch(seed=2, lengths=(8, 5))
    with calibrate(spiky, [(1, 0), (1, 2)]):
        out = spiky.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == (2, 12)


def test_decoding_without_prefill_is_an_error(spiky):
    batch = padded_batch(seed=5, lengths=(6, 6))
    first = spiky(**batch, use_cache=True)
    nxt = first.logits[:, -1].argmax(-1, keepdim=True)
    with pytest.raises(CalibrationError, match="prefill"), calibrate(spiky, [(1, 0)]):
        spiky(input_ids=nxt, past_key_values=first.past_key_values)


def test_save_load_roundtrip_and_reapply(tmp_path, spiky):
    model = interp.models.as_model(spiky)
    cal = Calibration([(1, 0), (0, 2)], beta=0.25, tau=0.2,
                      model=model_identity(model), meta={"task": "unit"})
    path = cal.save(tmp_path / "cal.json")
    loaded = Calibration.load(path)
    assert loaded == cal and json.loads(path.read_text())["rule"] == "prefill"
    batch = padded_batch(seed=7)
    with calibrate(model, cal):
        a = spiky(**batch).logits
    with calibrate(model, loaded.check(model)):
        b = spiky(**batch).logits
    assert torch.equal(a, b)


# -- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("beta", [-0.1, 1.5])
def test_beta_out_of_range(beta):
    with pytest.raises(CalibrationError, match=r"beta.*\[0, 1\]"):
        Calibration([(0, 0)], beta=beta)


@pytest.mark.parametrize("tau", [0.0, 1.0, 2.0])
def test_tau_out_of_range(tau):
    with pytest.raises(CalibrationError, match=r"tau.*\(0, 1\)"):
        Calibration([(0, 0)], tau=tau)


def test_head_out_of_range(llama):
    with pytest.raises(IndexOutOfRangeError, match="head index 4"), calibrate(llama, [(0, 4)]):
        pass
    with pytest.raises(IndexOutOfRangeError, match="layer index 7"), calibrate(llama, [(7, 0)]):
        pass


def test_calibration_for_another_model(llama):
    other = Calibration([(0, 0)], model={"name": "big", "n_layers": 30, "n_heads": 9, "n_kv_heads": 3,
                                         "head_dim": 64, "d_model": 576})
    with pytest.raises(CalibrationError, match="n_layers 30 .file. vs 2 .model."), calibrate(llama, other):
        pass


def test_bad_files_and_head_specs(tmp_path):
    with pytest.raises(CalibrationError, match="no calibration file"):
        Calibration.load(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text('{"foo": 1}')
    with pytest.raises(CalibrationError, match="not a calibration file"):
        Calibration.load(tmp_path / "x.json")
    assert parse_heads("3.1, 4:0, 5-2") == [(3, 1), (4, 0), (5, 2)]
    with pytest.raises(CalibrationError, match="LAYER.HEAD"):
        parse_heads("3/1")
