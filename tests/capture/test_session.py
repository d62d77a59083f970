"""Captures leave no trace: hooks removed, attention restored, no memory growth, also on errors."""

import gc
import tracemalloc

import pytest
import torch
from tiny import padded_batch, tiny_model

import interp
from interp import Patch, Patterns, Probe
from interp.capture import context
from interp.errors import IndexOutOfRangeError, PromptTooLongError

pytestmark = pytest.mark.fast


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _fingerprint(model):
    return (model.config._attn_implementation, _hook_count(model), len(context.active()),
            {k: v.clone() for k, v in model.state_dict().items()})


def _same(a, b):
    assert a[:3] == b[:3]
    assert all(torch.equal(a[3][k], b[3][k]) for k in a[3])


def test_fifty_captures_leave_no_hooks_and_no_memory_growth():
    model = tiny_model("llama")
    batch = padded_batch()
    before = _fingerprint(model)

    def one():
        with interp.capture(model, patterns=True, z=True, resid_pre=True, mlp_out=[0]) as rec:
            model(**batch)
        return rec

    for _ in range(5):  # warm up allocator caches
        one()
    gc.collect()
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    for _ in range(50):
        one()
    gc.collect()
    growth = tracemalloc.get_traced_memory()[0] - start
    tracemalloc.stop()
    _same(before, _fingerprint(model))
    assert growth < 256 * 1024, f"50 captures grew Python-tracked memory by {growth} bytes"


class _Boom(Probe):
    def wants(self, stack, layer):
        return layer == 1

    def record(self, call, z):
        raise RuntimeError("boom")


def test_a_capture_that_raises_midway_leaves_the_model_as_before():
    model = tiny_model("llama")
    batch = padded_batch()
    before = _fingerprint(model)
    with torch.no_grad():
        clean = model(**batch).logits
    with pytest.raises(RuntimeError, match="boom"):
        with interp.capture(model, patterns=True, resid_pre=True, probes=[_Boom()]):
            model(**batch)
    _same(before, _fingerprint(model))
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, clean)


def test_nested_captures_compose_and_restore_the_outer_implementation():
    model = tiny_model("llama", attn="eager")
    batch = padded_batch()
    with interp.capture(model, patterns=[0]) as outer:
        with interp.capture(model, patterns=[1]) as inner:
            model(**batch)
        assert model.config._attn_implementation == "interp"
    assert model.config._attn_implementation == "eager"
    assert list(outer.patterns) == [0] and list(inner.patterns) == [1]


def test_identical_patch_changes_nothing_and_a_foreign_one_does():
    model = tiny_model("llama")
    base, other = padded_batch(seed=0), padded_batch(seed=5)
    with interp.capture(model, resid_pre=[1]) as own:
        clean = model(**base).logits
    with interp.capture(model, resid_pre=[1]) as foreign:
        model(**other)
    with interp.capture(model, edits=[Patch(layer=1, positions=[-1], values=own.resid_pre[1][:, -1:])]):
        same = model(**base).logits
    with interp.capture(model, edits=[Patch(layer=1, positions=[-1], values=foreign.resid_pre[1][:, -1:])]):
        patched = model(**base).logits
    assert torch.equal(same, clean)
    assert not torch.allclose(patched[:, -1], clean[:, -1])
    torch.testing.assert_close(patched[:, :-1], clean[:, :-1], atol=0, rtol=0)  # earlier positions untouched


def test_gradients_are_off_unless_asked():
    model = tiny_model("llama")
    batch = padded_batch()
    with interp.capture(model, patterns=[0]):
        assert not model(**batch).logits.requires_grad
    with interp.capture(model, patterns=[0], grad=True):
        assert model(**batch).logits.requires_grad


@pytest.mark.parametrize("spec", [Patterns(layers=[2]), Patterns(heads=[4]), Patterns(layers=[-3])])
def test_out_of_range_layer_or_head_is_a_clear_error(spec):
    model = tiny_model("llama")
    with pytest.raises(IndexOutOfRangeError, match=r"out of range.*valid (layer|head)s are 0\.\.\d"):
        with interp.capture(model, patterns=spec):
            pass
    assert _hook_count(model) == 0 and model.config._attn_implementation == "sdpa"


def test_prompt_longer_than_the_context_is_refused_before_running():
    model = tiny_model("llama")  # max_position_embeddings = 128
    with pytest.raises(PromptTooLongError, match="context window of 128"):
        with interp.capture(model, patterns=[0]):
            model(input_ids=torch.ones(1, 200, dtype=torch.long))
