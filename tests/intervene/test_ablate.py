"""Head ablation editors vs direct references on a tiny GQA Llama (4 query heads, 2 kv heads)."""

from contextlib import contextmanager

import pytest
import torch
from tiny import padded_batch, tiny_model

import interp
from interp.errors import IndexOutOfRangeError, InterpError
from interp.intervene import HeadAblation, ablate, expand_heads, mean_z

pytestmark = pytest.mark.fast
D = 8  # head_dim of the tiny Llama


@pytest.fixture(scope="module")
def model():
    return interp.models.model.as_model(tiny_model("llama", attn="eager"))


@pytest.fixture(scope="module")
def batch():
    return padded_batch(seed=1)


@contextmanager
def slice_hook(module, heads, value=None, output=False):
    """Reference: overwrite head slices of a projection's input (o_proj) or output (q_proj) directly."""

    def edit(t):
        t = t.clone()
        for h in heads:
            t[..., h * D : (h + 1) * D] = 0 if value is None else value[h]
        return t

    if output:
        handle = module.register_forward_hook(lambda mod, args, out: edit(out))
    else:
        handle = module.register_forward_pre_hook(lambda mod, args: (edit(args[0]),))
    try:
        yield
    finally:
        handle.remove()


def logits(model, batch):
    with torch.no_grad():
        return model.hf(**batch).logits


def real(batch):
    return batch["attention_mask"].bool()


def test_no_heads_changes_nothing(model, batch):
    base = logits(model, batch)
    for mode in ("zero", "uniform"):
        with ablate(model, [], mode=mode):
            out = logits(model, batch)
        torch.testing.assert_close(out[real(batch)], base[real(batch)], rtol=0, atol=1e-5)


def test_zero_matches_o_proj_slice_zeroed(model, batch):
    o_proj = model.adapter.out_proj(1)
    with slice_hook(o_proj, [1, 2]):
        ref = logits(model, batch)
    with ablate(model, [(1, 1), (1, 2)], mode="zero"):
        out = logits(model, batch)
    assert not torch.allclose(ref, logits(model, batch), atol=1e-4)  # the ablation does something
    torch.testing.assert_close(out[real(batch)], ref[real(batch)], rtol=1e-5, atol=1e-5)


def test_mean_matches_o_proj_slice_set_to_reference_mean(model, batch):
    reference = padded_batch(seed=7, lengths=(5, 9))
    seen = []
    hook = model.adapter.out_proj(0).register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    try:
        logits(model, reference)
    finally:
        hook.remove()
    expected = seen[0][real(reference)].mean(0).reshape(4, D)  # o_proj input over real tokens, split by head
    means = mean_z(model, [reference])
    torch.testing.assert_close(means[0], expected, rtol=1e-5, atol=1e-6)
    with slice_hook(model.adapter.out_proj(0), [3], value=expected):
        ref = logits(model, batch)
    with ablate(model, [(0, 3)], mode="mean", means=means):
        out = logits(model, batch)
    torch.testing.assert_close(out[real(batch)], ref[real(batch)], rtol=1e-5, atol=1e-5)


def test_uniform_rows_and_zeroed_query_reference(model, batch):
    q_proj = model.adapter.attention(0).q_proj
    with slice_hook(q_proj, [2], output=True):  # the official masking: the head's query is zero
        ref = logits(model, batch)
    with interp.capture(model, patterns=[0], edits=[HeadAblation([(0, 2)], mode="uniform")]) as rec:
        out = logits(model, batch)
    torch.testing.assert_close(out[real(batch)], ref[real(batch)], rtol=1e-5, atol=1e-5)
    w = rec.patterns[0][:, 2]  # [batch, query, key]
    mask = real(batch)
    for b in range(w.shape[0]):
        rows = torch.nonzero(mask[b])[:, 0]
        for i, q in enumerate(rows):
            visible = rows[: i + 1]  # causal over real keys
            expected = torch.zeros(w.shape[-1])
            expected[visible] = 1.0 / len(visible)
            torch.testing.assert_close(w[b, q], expected)
    assert not torch.allclose(rec.patterns[0][:, 1], w)  # other heads untouched


def test_kv_groups_widen_to_the_whole_group(model, batch):
    assert expand_heads([(1, 1)], n_heads=4, n_kv_heads=2, kv_groups=True) == [(1, 0), (1, 1)]
    with ablate(model, [(1, 1)], mode="zero", kv_groups=True):
        grouped = logits(model, batch)
    with ablate(model, [(1, 0), (1, 1)], mode="zero"):
        explicit = logits(model, batch)
    torch.testing.assert_close(grouped, explicit, rtol=0, atol=0)


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_phase_limits_the_ablation(model, phase):
    ids = padded_batch(seed=3, lengths=(6, 6))["input_ids"]
    nxt = torch.tensor([[5], [9]])

    def run(ablated_prefill, ablated_decode):
        with torch.no_grad():
            if ablated_prefill:
                with slice_hook(model.adapter.out_proj(0), [0]):
                    out = model.hf(input_ids=ids, use_cache=True)
            else:
                out = model.hf(input_ids=ids, use_cache=True)
            if ablated_decode:
                with slice_hook(model.adapter.out_proj(0), [0]):
                    return out.logits, model.hf(input_ids=nxt, past_key_values=out.past_key_values).logits
            return out.logits, model.hf(input_ids=nxt, past_key_values=out.past_key_values).logits

    ref = run(phase == "prefill", phase == "decode")
    with ablate(model, [(0, 0)], mode="zero", phase=phase):
        got = run(False, False)
    for r, g in zip(ref, got):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)
    other = run(phase != "prefill", phase != "decode")
    assert not torch.allclose(got[1], other[1], atol=1e-5)


def test_nests_inside_another_capture_and_composes(model, batch):
    with slice_hook(model.adapter.out_proj(1), [0]), slice_hook(model.adapter.out_proj(0), [1]):
        ref = logits(model, batch)
    with interp.capture(model, z=[1], edits=[HeadAblation([(1, 0)], mode="zero")]) as outer:
        with ablate(model, [(0, 1)], mode="zero"):
            out = logits(model, batch)
    torch.testing.assert_close(out[real(batch)], ref[real(batch)], rtol=1e-5, atol=1e-5)
    assert outer.z[1][:, :, 0].abs().max() == 0  # the outer recorder sees the ablated output


def test_bad_input(model, batch):
    with pytest.raises(IndexOutOfRangeError, match="head"), ablate(model, [(0, 4)]):
        pass
    with pytest.raises(IndexOutOfRangeError, match="layer"), ablate(model, [(2, 0)]):
        pass
    with pytest.raises(InterpError, match="mode"), ablate(model, [(0, 0)], mode="scramble"):
        pass
    with pytest.raises(InterpError, match="phase"), ablate(model, [(0, 0)], phase="later"):
        pass
    with pytest.raises(InterpError, match="mean_z"), ablate(model, [(0, 0)], mode="mean"):
        pass
    with pytest.raises(InterpError, match="pairs"), ablate(model, [3]):
        pass
