"""Captures are private to their thread, nest with their own step counts, and probes are reusable."""

import threading

import pytest
import torch
from tiny import padded_batch, tiny_model

import interp
from interp import Patch, Patterns
from interp.capture import Activations, Residual, Stats, context
from interp.capture.budget import MemoryBudget
from interp.intervene.ablate import HeadAblation
from interp.intervene.calibrate import Calibrator

pytestmark = pytest.mark.fast

ROUNDS = 20


def _run_threads(*targets, timeout: float = 120):
    errors = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as err:  # noqa: BLE001  (re-raised in the main thread)
                errors.append(err)

        return run

    threads = [threading.Thread(target=wrap(fn)) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]


def _capture_once(model, batch, layer):
    with interp.capture(model, patterns=[layer], resid_pre=[layer]) as rec:
        model(**batch)
    return (rec.n_forward, rec.patterns[layer], rec.resid_pre[layer], sorted(rec.patterns),
            sorted(rec.resid_pre))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_two_threads_capturing_different_layers_equal_single_thread_results(attn):
    model = tiny_model("llama", attn=attn)
    batches = [padded_batch(seed=0), padded_batch(seed=1, lengths=(5, 8))]
    reference = [_capture_once(model, batches[i], i) for i in (0, 1)]
    barrier = threading.Barrier(2)
    results = {0: [], 1: []}

    def worker(i):
        def run():
            for _ in range(ROUNDS):
                barrier.wait()  # both captures open and run at the same time
                with interp.capture(model, patterns=[i], resid_pre=[i]) as rec:
                    barrier.wait()
                    model(**batches[i])
                    barrier.wait()  # the other thread's pass also ran while this capture was open
                results[i].append((rec.n_forward, rec.patterns[i], rec.resid_pre[i], sorted(rec.patterns),
                                   sorted(rec.resid_pre)))

        return run

    _run_threads(worker(0), worker(1))
    for i in (0, 1):
        assert len(results[i]) == ROUNDS
        for n, pat, resid, pat_layers, resid_layers in results[i]:
            assert n == 1 and pat_layers == [i] and resid_layers == [i]
            assert torch.equal(pat, reference[i][1]) and torch.equal(resid, reference[i][2])
    assert model.config._attn_implementation == attn and context.active() == ()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("mode", ["zero", "uniform"])
def test_ablation_open_in_one_thread_leaves_another_threads_plain_forward_unchanged(attn, mode):
    model = tiny_model("llama", attn=attn)
    batch = padded_batch()
    with torch.no_grad():
        clean = model(**batch).logits
    with interp.ablate(model, [(0, 1), (1, 2)], mode=mode):
        ablated = model(**batch).logits
    assert (ablated - clean).abs().max() > 1e-3  # the ablation does change this model
    opened, done = threading.Event(), threading.Event()
    seen = {}

    def ablating():
        with interp.ablate(model, [(0, 1), (1, 2)], mode=mode):
            opened.set()
            seen["inside"] = model(**batch).logits
            done.wait(60)
            seen["inside_after"] = model(**batch).logits

    def plain():
        opened.wait(60)
        with torch.no_grad():
            seen["plain"] = [model(**batch).logits for _ in range(3)]
        done.set()

    _run_threads(ablating, plain)
    for logits in seen["plain"]:
        assert torch.equal(logits, clean)
    assert torch.equal(seen["inside"], ablated) and torch.equal(seen["inside_after"], ablated)
    assert model.config._attn_implementation == attn


def test_a_probe_shared_by_two_open_captures_is_refused():
    model = tiny_model("llama")
    pat = Patterns(layers=[0])
    with interp.capture(model, probes=[pat]):
        with pytest.raises(context.ProbeInUseError, match="own probe object"):
            with interp.capture(model, probes=[pat]):
                pass
    with interp.capture(model, probes=[pat]):  # free again once its capture closed
        pass


def test_nested_capture_counts_its_own_steps_after_a_prior_forward():
    model = tiny_model("llama")
    batch = padded_batch()
    with interp.capture(model, patterns=[0]) as alone:
        model(**batch)
    with interp.ablate(model, [(1, 0)], mode="uniform") as outer:
        model(**padded_batch(seed=5))  # a pass before the inner capture opens
        with interp.capture(model, patterns=[0, 1], probes=[_Steps()]) as inner:
            model(**batch)
            model(**batch)
        assert outer.n_forward == 0  # still open
    assert inner.n_forward == 2 and outer.n_forward == 3
    assert inner.probes[-1].steps == {0: [0, 1], 1: [0, 1]}  # both layers carry the inner capture's own step
    assert torch.equal(inner.patterns.steps(0)[0], alone.patterns[0])
    with interp.capture(model, patterns=[1], edits=[HeadAblation([(1, 0)], mode="uniform")]) as direct:
        model(**batch)
    assert torch.equal(inner.patterns.steps(1)[0], direct.patterns[1])


class _Steps(interp.Probe):
    def __init__(self):
        self.steps = {}

    def wants(self, stack, layer):
        return True

    def record(self, call, z):
        self.steps.setdefault(call.step, []).append(call.layer)


def test_a_reused_patch_patches_again():
    model = tiny_model("llama")
    base, cf = padded_batch(seed=0), padded_batch(seed=1)
    with interp.capture(model, resid_pre=[1]) as src:
        model(**cf)
    patch = Patch(layer=1, positions=[-1], values=src.resid_pre[1][:, -1:])
    with torch.no_grad():
        clean = model(**base).logits
    outs = []
    for _ in range(3):
        with interp.capture(model, edits=[patch]):
            outs.append(model(**base).logits)
    with interp.capture(model, edits=[Patch(layer=1, positions=[-1], values=src.resid_pre[1][:, -1:])]):
        fresh = model(**base).logits
    assert not torch.allclose(fresh, clean)
    for out in outs:
        assert torch.equal(out, fresh)


def _probes():
    return {
        "patterns": lambda: Patterns(layers=[0, 1], queries=-1),
        "z": lambda: Activations(layers=[1], what="z"),
        "k": lambda: Activations(layers=[0], what="k"),
        "resid": lambda: Residual(site="resid_post", layers=[0]),
        "stats": lambda: Stats(layers=[1], top_k=2, first_tokens=1),
    }


def _read(name, probe):
    if name == "stats":
        return [probe.rows[1].entropy, probe.rows[1].topk_index, probe.rows[1].span_mass,
                probe.columns[1].total]
    return [probe.data[layer] for layer in probe.data]


@pytest.mark.parametrize("name", list(_probes()))
def test_every_recorder_is_reset_when_reused(name):
    model = tiny_model("llama")
    first, second = padded_batch(seed=0), padded_batch(seed=2, lengths=(6, 6, 3))
    probe = _probes()[name]()
    with interp.capture(model, probes=[probe]):
        model(**first)
    with interp.capture(model, probes=[probe, MemoryBudget("1GB", [probe])]):
        model(**second)
    fresh = _probes()[name]()
    with interp.capture(model, probes=[fresh]):
        model(**second)
    for a, b in zip(_read(name, probe), _read(name, fresh), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("make", [lambda: HeadAblation([(0, 1)], mode="uniform"),
                                  lambda: Calibrator([(0, 1), (1, 3)], beta=0.2, tau=0.05)])
def test_editors_are_reusable(make):
    model = tiny_model("llama")
    first, second = padded_batch(seed=0), padded_batch(seed=2, lengths=(6, 6, 3))
    editor = make()
    with interp.capture(model, edits=[editor]):
        model(**first)
    with interp.capture(model, edits=[editor]):
        again = model(**second).logits
    with interp.capture(model, edits=[make()]):
        fresh = model(**second).logits
    assert torch.equal(again, fresh)
