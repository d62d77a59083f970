"""KV-cache compression: policies, the split cache, and equivalence with a masked simulation."""

import pytest
import torch
from kv_sim import MIXED
from kv_sim import generate as _generate
from kv_sim import policy as _policy
from kv_sim import simulate as _simulate
from tiny import padded_batch, tiny_model

import interp
from interp.intervene.compress import KVPolicy, PolicyError, kv_head_scores, select_kv_heads

pytestmark = pytest.mark.fast

@pytest.mark.parametrize("full,sink,window", [(MIXED, 2, 4), ([[False, True], [True, False]], 1, 3),
                                              ([[False, False], [False, False]], 0, 5)])
def test_compressed_generation_matches_masked_simulation(full, sink, window):
    model = tiny_model("llama")
    batch = padded_batch(lengths=(12, 7, 15))
    policy = _policy(full, sink, window)
    with interp.compress(model, policy) as comp:
        got = _generate(model, batch)
    want = _simulate(model, batch, policy)
    assert torch.equal(got.sequences, want.sequences)
    for a, b in zip(got.logits, want.logits):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    for layer in comp.cache.layers:  # streaming storage is bounded
        assert layer.s_keys.shape[2] <= sink + window


def test_masked_simulation_differs_from_full_attention():  # the reference itself can fail
    model = tiny_model("llama")
    batch = padded_batch(lengths=(12, 7, 15))
    full = _generate(model, batch)
    sim = _simulate(model, batch, _policy(MIXED))
    assert not torch.allclose(full.logits[0], sim.logits[0], atol=1e-3)


@pytest.mark.parametrize("policy", [_policy([[True, True], [True, True]]), _policy(MIXED, sink=2, window=64)])
def test_all_full_or_wide_window_is_token_identical(policy):
    model = tiny_model("llama")
    batch = padded_batch(lengths=(12, 7, 15))
    want = _generate(model, batch, n=8)
    with interp.compress(model, policy):
        got = _generate(model, batch, n=8)
    assert torch.equal(got.sequences, want.sequences)
    torch.testing.assert_close(torch.stack(got.logits), torch.stack(want.logits), atol=1e-4, rtol=0)


def test_stored_bytes_match_policy_and_are_smaller():
    model = tiny_model("llama")
    policy = _policy(MIXED)
    ids = torch.randint(1, 90, (2, 20))
    with interp.compress(model, policy) as comp:
        model(input_ids=ids)
        n = comp.cache.get_seq_length()
        assert n == 20
        assert comp.cache.stored_bytes() == policy.kv_bytes(n, batch=2) < policy.full_kv_bytes(n, batch=2)
    assert policy.full_kv_bytes(20, batch=2) == 2 * 2 * 2 * 8 * 4 * 2 * 20  # layers*kv*(k,v)*d*bytes*batch*n


def test_composes_with_z_capture_and_zero_ablation_and_refuses_patterns():
    model = tiny_model("llama")
    ids = torch.randint(1, 90, (1, 10))
    policy = _policy(MIXED)
    with interp.compress(model, policy):
        with interp.capture(model, z=[0]) as rec:
            base = model(input_ids=ids).logits
        with interp.ablate(model, [(0, 1)], mode="zero"):
            ablated = model(input_ids=ids).logits
    assert rec.z[0].shape == (1, 10, 4, 8)
    assert not torch.allclose(base, ablated)
    with pytest.raises(PolicyError, match="full keys"):  # noqa: SIM117
        with interp.capture(model, patterns=[0]), interp.compress(model, policy):
            model(input_ids=ids)


def test_kv_head_score_is_max_over_query_heads():
    scores = torch.tensor([[0.1, 0.7, 0.0, 0.3], [0.2, 0.2, 0.9, 0.1]])
    torch.testing.assert_close(kv_head_scores(scores, 2), torch.tensor([[0.7, 0.3], [0.2, 0.9]]))
    model = tiny_model("llama")
    policy = select_kv_heads(model, scores, fraction=0.5, sink=1, window=2)
    assert policy.full.tolist() == [[True, False], [False, True]]
    assert select_kv_heads(model, scores, fraction=0.25).full.sum() == 1  # at least one, top one
    assert select_kv_heads(model, scores, fraction=0.25).full[1, 1]


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_bad_fraction_is_refused(fraction):
    with pytest.raises(PolicyError, match=r"\(0, 1\]"):
        select_kv_heads(tiny_model("llama"), torch.rand(2, 4), fraction=fraction)


def test_bad_window_and_score_shape_are_refused():
    model = tiny_model("llama")
    with pytest.raises(PolicyError, match="window must be >= 1"):
        select_kv_heads(model, torch.rand(2, 4), fraction=0.5, window=0)
    with pytest.raises(PolicyError, match="expected"):
        select_kv_heads(model, torch.rand(3, 4), fraction=0.5)


def test_tsv_round_trip_and_wrong_shape(tmp_path):
    policy = _policy(MIXED)
    path = tmp_path / "full_attention_heads.tsv"
    policy.save_tsv(path)
    assert path.read_text() == "1\t0\n0\t0\n"
    again = KVPolicy.load_tsv(path, shape=(2, 2), sink=2, window=4)
    assert torch.equal(again.full, policy.full)
    with pytest.raises(PolicyError, match="2 layers x 2 KV heads, the model has 30 x 3"):
        KVPolicy.load_tsv(path, shape=(30, 3))
    (tmp_path / "ragged.tsv").write_text("1\t0\n1\n")
    with pytest.raises(PolicyError, match="same number"):
        KVPolicy.load_tsv(tmp_path / "ragged.tsv")
    model = tiny_model("llama")
    bad = KVPolicy(torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(PolicyError, match="the model has 2 x 2"):  # noqa: SIM117
        with interp.compress(model, bad):
            pass


def test_duo_gates_at_one_are_full_attention_and_train():
    from interp.capture import capture
    from interp.intervene.compress.duo import GatedAttention

    model = tiny_model("llama")
    ids = torch.randint(1, 90, (1, 16))
    want = model(input_ids=ids).logits
    alpha = torch.ones(2, 2)
    with capture(model, probes=[GatedAttention(alpha, sink=1, window=3)]):
        assert torch.allclose(model(input_ids=ids).logits, want, atol=1e-5)
    policy = _policy(MIXED, sink=1, window=3)
    alpha = policy.full.float()  # gates at 0/1 are the masked policy
    with capture(model, probes=[GatedAttention(alpha, sink=1, window=3)]):
        gated = model(input_ids=ids).logits
    with interp.compress(model, policy):
        compressed = model(input_ids=ids).logits
    torch.testing.assert_close(gated, compressed, atol=1e-4, rtol=0)


def test_sink_scores_see_the_sink():
    from interp.intervene.compress.heuristics import sink_scores

    model = tiny_model("llama")
    scores = sink_scores(model, [torch.randint(1, 90, (20,))], sink=2, window=4)
    assert scores.shape == (2, 4) and ((scores >= 0) & (scores <= 1)).all()


@pytest.mark.parametrize("argv,message", [(["--fractions", "0,1"], "(0, 1]"), (["--window", "0"], "window"),
                                          (["--fractions", "1.5"], "(0, 1]")])
def test_cli_refuses_bad_policies_before_loading(argv, message, capsys):
    from interp.cli import main

    assert main(["compress", "smollm2", *argv, "--out", "/nonexistent/never"]) == 2
    assert message in capsys.readouterr().err


def test_select_takes_retrieval_scores():
    from interp.analyze.retrieval import RetrievalScores

    per_trial = torch.tensor([[[0.0, 0.0, 0.0, 0.9], [0.1, 0.0, 0.0, 0.0]]] * 2)
    scores = RetrievalScores(per_trial, ["a", "b"], 2, "tiny")
    policy = select_kv_heads(tiny_model("llama"), scores, fraction=0.25)
    assert policy.full.tolist() == [[False, True], [False, False]]


def test_summary_smallest_fraction_and_gap():
    from interp.cli.compress_run import summarise

    def cell(method, f, recalled, draw=0):
        return {"method": method, "draw": draw, "fraction": f, "length": 8, "recalled": recalled,
                "accuracy": sum(recalled) / len(recalled)}

    cells = [cell("full", 1.0, [1, 1, 1, 1]), cell("retrieval", 0.25, [1, 1, 1, 1]),
             cell("retrieval", 0.5, [1] * 4), cell("random", 0.25, [0, 0, 0, 0]),
             cell("random", 0.25, [1, 0, 0, 0], draw=1)]
    s = summarise(cells, [8])
    assert s["smallest_fraction_95"] == {"retrieval@8": 0.25, "random@8": None}
    gap = s["gap_at_0.25"]["8"]
    assert gap["gap"] == pytest.approx(1 - 1 / 8) and gap["ci95"][0] <= gap["gap"] <= gap["ci95"][1]
