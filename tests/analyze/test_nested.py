"""Analyzers inside `ablate`, `calibrate` and `capture(edits=...)`, after a prior forward pass, equal
the same analysis with the same editors applied directly (one capture, or `edits=`)."""

import pytest
import torch
from tiny import copying_llama, padded_batch

import interp
from interp.analyze.heads import DetectorProbe, _collect, score_batch
from interp.analyze.retrieval import load_checkpoint, retrieval_scores, run_trials
from interp.analyze.saliency import SaliencyConfig, explain_text
from interp.analyze.sinks import SinkConfig, find_sinks
from interp.capture import Stats
from interp.intervene.ablate import HeadAblation
from interp.intervene.calibrate import Calibrator, calibrate
from interp.models.model import as_model
from interp.tasks.niah import Needle, Trial

pytestmark = pytest.mark.fast

HEADS = [(1, 2), (1, 3)]  # editors on some layers only: the other layers' calls come from the analyzer alone
CAL = [(1, 1), (1, 2)]


def _editors(name):
    if name == "ablate":
        return [HeadAblation(HEADS, mode="uniform")]
    if name == "calibrate":
        return [Calibrator(CAL, beta=0.2, tau=0.05)]
    return [HeadAblation([(1, 0)], mode="zero"), Calibrator(CAL, beta=0.2, tau=0.05)]


def _enclosing(m, name):
    if name == "ablate":
        return interp.ablate(m, HEADS, mode="uniform")
    if name == "calibrate":
        return calibrate(m, CAL, beta=0.2, tau=0.05)
    return interp.capture(m, edits=_editors("capture"))


NAMES = ["ablate", "calibrate", "capture"]


@pytest.fixture(scope="module")
def tiny():
    return copying_llama()


def tiny_trials(n=5, seed=0):
    """As in test_retrieval (few distinct ids, different lengths), but sharing a 16+ token prefix, so
    that the trial runner reuses cached prefixes."""
    g = torch.Generator().manual_seed(seed)
    needle = Needle("the code is 7", "What is the code?", "7", "The code is")
    shared = torch.randint(3, 12, (40,), generator=g).tolist()
    trials = []
    for i in range(n):
        length = 20 + 3 * i
        ids = shared[: length - 4] + torch.randint(3, 12, (4,), generator=g).tolist()
        trials.append(Trial(f"t{i}", needle, length, 0.5, ids, (2, length - 2), (2, length - 2)))
    return trials


def _prior_forward(m):
    m.hf(**padded_batch(seed=9))


@pytest.mark.parametrize("name", NAMES)
def test_retrieval_scores_inside_editors_equal_direct_edits(tiny, name, tmp_path):
    trials = tiny_trials(n=5)
    direct = {r.id: r for b in run_trials(tiny, trials, batch_size=2, max_new_tokens=6, edits=_editors(name),
                                         score=True, progress=False) for r in b}
    plain = {r.id: r
             for b in run_trials(tiny, trials, batch_size=2, max_new_tokens=6, score=True, progress=False)
             for r in b}
    with _enclosing(tiny, name):
        _prior_forward(tiny)
        retrieval_scores(tiny, trials, batch_size=2, max_new_tokens=6, progress=False,
                         checkpoint=tmp_path / "scan.jsonl")  # the checkpoint keeps every trial's scores
        nested = {r.id: r for b in run_trials(tiny, trials, batch_size=3, max_new_tokens=6, score=True,
                                              progress=False) for r in b}
    scan = load_checkpoint(tmp_path / "scan.jsonl")
    for t in trials:
        assert scan[t.id].output == direct[t.id].output == nested[t.id].output
        # via JSON floats
        torch.testing.assert_close(scan[t.id].scores, direct[t.id].scores, rtol=0, atol=1e-6)
        assert torch.equal(nested[t.id].scores, direct[t.id].scores)
    assert sum(r.scores.sum() for r in direct.values()) > 0
    assert any(not torch.equal(plain[i].scores, direct[i].scores) for i in plain)  # the editors matter


@pytest.mark.parametrize("name", NAMES)
def test_sinks_inside_editors_equal_direct_edits(tiny, name):
    batch = padded_batch(seed=4, lengths=(9, 6, 8))
    config = SinkConfig(batch_size=2, length=None, tau=0.2)
    with _enclosing(tiny, name):
        _prior_forward(tiny)
        nested = find_sinks(tiny, batch, config, progress=False)
    firsts = []
    for lo in (0, 2):
        ids, mask = batch["input_ids"][lo:lo + 2], batch["attention_mask"][lo:lo + 2]
        stats = Stats(layers=[0, 1])
        with interp.capture(tiny, edits=_editors(name), probes=[stats]):
            tiny.hf(input_ids=ids, attention_mask=mask)
        alpha = torch.stack([stats.columns[layer].mean for layer in (0, 1)], 1)
        first = mask.int().argmax(-1)
        firsts.append(alpha[torch.arange(len(ids)), :, :, first])
    assert torch.equal(nested.first, torch.cat(firsts))


@pytest.mark.parametrize("name", NAMES)
def test_head_detection_inside_editors_equals_direct_edits(tiny, name):
    ids = torch.randint(3, 90, (2, 12), generator=torch.Generator().manual_seed(1))
    with _enclosing(tiny, name):
        _prior_forward(tiny)
        nested = score_batch(tiny, ids).to_json()
        again = score_batch(tiny, ids).to_json()
    probe = DetectorProbe()
    probe.feed(ids, torch.ones_like(ids, dtype=torch.bool))
    with interp.capture(tiny, edits=_editors(name), probes=[probe]):
        tiny.hf(input_ids=ids, attention_mask=torch.ones_like(ids))
    direct = _collect(probe.sums).to_json()
    assert nested == direct and again == direct
    assert score_batch(tiny, ids).to_json() != direct  # the editors change the scores


@pytest.mark.parametrize("name", NAMES)
def test_saliency_inside_editors_equals_direct_edits(tiny, name):
    cfg = SaliencyConfig(method="input_x_gradient", show_progress=False)
    prompt = [5, 7, 3, 9, 4, 8, 6]
    tiny = as_model(tiny.hf)  # no tokenizer: tokens are labelled by id
    with _enclosing(tiny, name):  # no gradients in the block: the analyzer turns them on for itself
        _prior_forward(tiny)
        nested = explain_text(tiny, prompt, max_new_tokens=3, config=cfg)
    with interp.capture(tiny, edits=_editors(name), grad=True):
        direct = explain_text(tiny, prompt, max_new_tokens=3, config=cfg)
    assert nested.token_ids == direct.token_ids
    assert torch.equal(nested.saliency, direct.saliency) and torch.equal(nested.attention, direct.attention)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode,patcher", [("cached", "engine"), ("full", "engine"), ("cached", "hooks")])
def test_binding_patching_inside_editors_equals_one_capture(tiny, name, mode, patcher):
    from interp.analyze.binding.patching import patched_logits, position_ids, residuals
    from interp.capture import Patch

    base, other = padded_batch(seed=5, lengths=(9, 6, 8)), padded_batch(seed=6, lengths=(7, 9, 5))
    layers = [0, 1]
    with _enclosing(tiny, name):
        _prior_forward(tiny)
        source = residuals(tiny, other, layers)
        nested = patched_logits(tiny, base, source, layers, mode=mode, patcher=patcher, unpatched=True)
    want_rows = []
    for layer in [*layers, None]:  # the reference: editors and the patch in one capture
        with torch.no_grad(), interp.capture(tiny, resid_pre=layers, edits=_editors(name)) as rec:
            tiny.hf(**other, position_ids=position_ids(other["attention_mask"]))
        patch = [] if layer is None else [Patch(layer=layer, positions=[-1],
                                                values=rec.resid_pre[layer][:, -1:])]
        with torch.no_grad(), interp.capture(tiny, edits=[*_editors(name), *patch]):
            want_rows.append(tiny.hf(**base, position_ids=position_ids(base["attention_mask"]))
                             .logits[:, -1].float())
    want = torch.stack(want_rows)
    torch.testing.assert_close(nested, want, rtol=0, atol=1e-5)
    plain = patched_logits(tiny, base, residuals(tiny, other, layers), layers, mode=mode, unpatched=True)
    assert not torch.allclose(plain, want, atol=1e-3)  # the editors matter
    assert not torch.allclose(want[0], want[-1], atol=1e-3)  # so does the patch
