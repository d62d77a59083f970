"""Binding analyzer: the interchange intervention (engine, hooks, nnsight), labels, mixing model, CLI."""

import random

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from interp.analyze.binding import (
    BindingConfig,
    MixingData,
    MixingModel,
    Sweep,
    analyze_binding,
    compare_terms,
    fit_mixing_model,
    js_divergence,
    patched_logits,
    patched_logits_nnsight,
    residual_patch,
    residuals,
    share_interval,
    uniform_score,
)
from interp.capture import Patch, capture
from interp.cli.binding import add_arguments as add_binding_arguments
from interp.cli.binding import command
from interp.errors import IndexOutOfRangeError, InterpError
from interp.organisms.binding import OrganismConfig, build_model, build_tokenizer
from interp.tasks.binding import BindingTask, tokenize_prompts


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    tok = build_tokenizer()
    config = OrganismConfig(d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, d_mlp=64)
    model = build_model(config, len(tok)).eval()
    task = BindingTask("boxes", tok)
    pairs = [task.counterfactual(5, rng=random.Random(i)) for i in range(4)]
    orig = tokenize_prompts(tok, [p.original for p in pairs]).batch()
    cf = tokenize_prompts(tok, [p.counterfactual for p in pairs]).batch()
    return model, tok, orig, cf


@pytest.mark.fast
def test_residuals_match_hidden_states(tiny):
    model, _, _, cf = tiny
    layers = [0, 1, 2]
    hidden = model(**cf, output_hidden_states=True).hidden_states  # an independent read-out
    torch.testing.assert_close(residuals(model, cf, layers), torch.stack([hidden[L][:, -1] for L in layers]))


@pytest.mark.fast
def test_identical_counterfactual_changes_nothing(tiny):
    model, _, orig, _ = tiny
    base = model(**orig).logits[:, -1]
    own = residuals(model, orig, [0, 1, 2])
    for mode in ("cached", "full"):
        patched = patched_logits(model, orig, own, [0, 1, 2], mode=mode)
        torch.testing.assert_close(patched, base[None].expand_as(patched), atol=1e-5, rtol=0)


@pytest.mark.fast
def test_patching_every_layer_everywhere_reproduces_the_counterfactual(tiny):
    model, _, orig, cf = tiny
    hidden = model(**cf, output_hidden_states=True).hidden_states
    with residual_patch(model, {L: hidden[L] for L in range(3)}, positions=slice(None)):
        out = model(**orig).logits
    torch.testing.assert_close(out, model(**cf).logits, atol=1e-5, rtol=0)


@pytest.mark.fast
def test_engine_hooks_cached_and_nnsight_agree(tiny):
    model, tok, orig, cf = tiny
    layers = [0, 1, 2]
    src = residuals(model, cf, layers)
    ref = patched_logits_nnsight(model, tok, orig, src, layers)
    for mode in ("cached", "full"):
        for patcher in ("engine", "hooks"):
            torch.testing.assert_close(patched_logits(model, orig, src, layers, mode=mode, patcher=patcher),
                                       ref, atol=1e-5, rtol=0)
    assert (ref[1] - ref[2]).abs().max() > 1e-3  # the patch does something


@pytest.mark.fast
def test_bad_layer_and_mode_are_explained(tiny):
    model, tok, orig, cf = tiny
    with pytest.raises(IndexOutOfRangeError, match="valid layers are 0..2"):
        analyze_binding(model, tok, BindingConfig(layers=[7]), progress=False)
    with pytest.raises(InterpError, match="mode"):
        patched_logits(model, orig, residuals(model, cf, [0]), [0], mode="fast")
    with pytest.raises(InterpError, match="at most 20 groups"):
        analyze_binding(model, tok, BindingConfig(groups=(30,)), progress=False)
    with pytest.raises(InterpError, match="unknown binding template"):
        analyze_binding(model, tok, BindingConfig(template="planets"), progress=False)


@pytest.mark.fast
def test_outcome_labels_and_position_shares():
    task = BindingTask("boxes")
    pairs = [task.counterfactual(4, rng=random.Random(i), positional=i % 4) for i in range(8)]
    probs = torch.zeros(1, 8, 4)
    for i, cf in enumerate(pairs):  # even prompts land on the lexical group, odd on the original answer
        probs[0, i, cf.lexical if i % 2 == 0 else cf.original.query] = 1.0
    sweep = Sweep(4, [3], pairs, probs, probs[0], probs[0])
    shares = sweep.shares(3)
    assert shares["lexical"] == 0.5 and shares["no effect"] == 0.5 and shares["positional"] == 0.0
    by_pos = sweep.by_position(3)
    assert [b["lexical"] for b in by_pos] == [1.0, 0.0, 1.0, 0.0]


@pytest.mark.fast
def test_js_divergence_matches_scipy():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(6, 5, generator=g)
    q = torch.rand(6, 5, generator=g)
    mask = torch.ones(6, 5, dtype=torch.bool)
    mask[3:, 4] = False
    p, q = p * mask, q * mask
    p, q = p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)
    ref = [jensenshannon(a[m].numpy(), b[m].numpy(), base=2) ** 2 for a, b, m in zip(p, q, mask)]
    np.testing.assert_allclose(js_divergence(p, q, mask).numpy(), ref, atol=1e-6)


def _synthetic(model: MixingModel, count: int, seed: int) -> MixingData:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        n = rng.choice([4, 6, 10])
        rows.append((n, *rng.sample(range(n), 3)))
    n, p, r, s = (torch.tensor(c) for c in zip(*rows))
    data = MixingData(torch.zeros(count, 10), n, p, r, s)
    with torch.no_grad():
        data.probs = model(data)
    return data


@pytest.mark.fast
def test_mixing_model_fit_recovers_a_known_mixture():
    truth = MixingModel()
    with torch.no_grad():
        truth.w_pos.fill_(3.0), truth.w_lex.fill_(2.0), truth.w_ref.fill_(1.0)
        truth.sigma_coef.copy_(torch.tensor([-1.0, 4.0, -4.0]))  # wide in the middle, sharp at the edges
    train, held = _synthetic(truth, 200, 0), _synthetic(truth, 200, 1)
    full = fit_mixing_model(train, steps=200, restarts=1)
    positional = fit_mixing_model(train, "positional", steps=200, restarts=1)
    assert full.score(held) > 0.99
    assert positional.score(held) < full.score(held) - 0.02
    assert uniform_score(held) < full.score(held)
    with pytest.raises(InterpError, match="no examples"):
        fit_mixing_model(train.subset(torch.tensor([], dtype=torch.long)))


@pytest.mark.fast
def test_term_comparison_finds_the_terms_that_generated_the_data():
    truth = MixingModel(("lexical", "reflexive"))  # no positional term in the data
    with torch.no_grad():
        truth.w_lex.fill_(3.0), truth.w_ref.fill_(1.5)
    cmp = compare_terms(_synthetic(truth, 300, 0), _synthetic(truth, 300, 1), steps=150, restarts=1,
                        resamples=500)
    assert cmp.drop["lexical"]["earns_place"] and cmp.drop["reflexive"]["earns_place"]
    assert not cmp.drop["positional"]["earns_place"] and cmp.drop["lexical"]["significant"]
    assert cmp.chosen == "lexical+reflexive"
    row = cmp.rows["lexical+reflexive"]
    assert row["low"] <= row["heldout"] <= row["high"] and row["heldout"] > 0.99 and row["n_params"] == 2
    assert cmp.rows["uniform"]["n_params"] == 0 and cmp.rows["positional"]["n_params"] == 4
    assert abs(cmp.rows["uniform"]["heldout"] - uniform_score(_synthetic(truth, 300, 1))) < 1e-6
    with pytest.raises(InterpError, match="unknown mixing terms"):
        MixingModel(("lexicon",))


@pytest.mark.fast
def test_share_interval_is_the_wilson_interval():
    for k, n in ((0, 10), (7, 40), (200, 400)):  # the closed form, independently of scipy
        z, p = 1.959963984540054, k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
        np.testing.assert_allclose(share_interval(k, n), (centre - half, centre + half), atol=1e-9)


@pytest.mark.fast
def test_analyze_binding_end_to_end(tiny):
    model, tok, _, _ = tiny
    result = analyze_binding(model, tok, BindingConfig(groups=(3, 4), per_position=2, accuracy_per_position=1,
                                                           fit_steps=30, fit_restarts=1),
                             progress=False)
    out = result.to_json()
    assert out["read_layer"] in range(3)
    for n in (3, 4):
        shares = out["shares_at_read_layer"][n]
        assert abs(sum(shares.values()) - 1) < 1e-9
        assert len(out["by_position"][n]["patched"]) == n
    assert out["pairs"] == {3: 6, 4: 8}
    assert set(out["fit"]["rows"]) == {"uniform", "positional", "lexical", "reflexive", "positional+lexical",
                                       "positional+reflexive", "lexical+reflexive",
                                       "positional+lexical+reflexive"}
    assert set(out["fit"]["drop"]) == {"positional", "lexical", "reflexive"}
    lo, hi = out["intervals_at_read_layer"][3]["lexical"]
    assert lo <= out["shares_at_read_layer"][3]["lexical"] <= hi
    assert set(result.figures()) == {"sweep", "positions", "fit"}
    assert "held-out 1-JS" in result.report() and "earns its place" in result.report()


@pytest.mark.fast
def test_cli_arguments():
    import argparse

    parser = add_binding_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["smollm2", "--task", "foods", "--groups", "3,5,10", "--layers", "20,22"])
    assert args.groups == (3, 5, 10) and args.layers == [20, 22] and args.task == "foods"
    assert parser.parse_args(["m"]).layers == "auto"
    assert args.pairs == 400 and args.per_position is None
    assert command(args) == ("interp binding smollm2 --task foods --format auto --groups 3,5,10 --layers "
                             "20,22 --pairs 400 --accuracy-per-position 10 --seed 0 --out runs/binding")
    assert "--per-position 6" in command(parser.parse_args(["m", "--per-position", "6"]))
    with pytest.raises(SystemExit):
        parser.parse_args(["m", "--groups", "three"])
    with pytest.raises(SystemExit):
        parser.parse_args(["m", "--task", "planets"])


@pytest.mark.slow
def test_smollm2_patching_identity_counterfactual_and_nnsight(smollm2):
    """The must-shows on the real model, at two layers, on three prompts."""
    tok = smollm2.tokenizer
    task = BindingTask("boxes", tok, format="chat")
    pairs = [task.counterfactual(3, rng=random.Random(i)) for i in range(3)]
    orig = tokenize_prompts(tok, [p.original for p in pairs]).batch()
    cf = tokenize_prompts(tok, [p.counterfactual for p in pairs]).batch()
    assert orig["input_ids"].shape == cf["input_ids"].shape
    layers = [10, 22]
    base = smollm2.hf(**orig).logits[:, -1]
    own = residuals(smollm2, orig, layers)
    torch.testing.assert_close(patched_logits(smollm2, orig, own, layers), base[None].expand(2, -1, -1),
                               atol=1e-3, rtol=0)
    src = residuals(smollm2, cf, layers)
    engine = patched_logits(smollm2, orig, src, layers)
    nns = patched_logits_nnsight(smollm2, tok, orig, src, layers)
    torch.testing.assert_close(engine, nns, atol=1e-3, rtol=0)
    n_layers = len(smollm2.adapter.blocks(smollm2.adapter.main_stack))
    with capture(smollm2, resid_pre=list(range(n_layers))) as rec:
        cf_logits = smollm2.hf(**cf).logits[:, -1]
    everywhere = list(range(cf["input_ids"].shape[1]))
    edits = [Patch(layer=L, positions=everywhere, values=rec.resid_pre[L]) for L in range(n_layers)]
    with capture(smollm2, edits=edits):  # every layer's full residual from the counterfactual ...
        out = smollm2.hf(**orig).logits[:, -1]
    torch.testing.assert_close(out, cf_logits, atol=1e-3, rtol=0)  # ... gives the counterfactual's output


@pytest.mark.fast
def test_read_layer_is_the_largest_gain_over_the_unpatched_labels():
    from interp.analyze.binding import choose_read_layer

    task = BindingTask("boxes")
    pairs = [task.counterfactual(4, rng=random.Random(i)) for i in range(4)]
    onehot = lambda groups: torch.nn.functional.one_hot(torch.tensor(groups), 4).float()
    base = onehot([p.original.query for p in pairs])  # unpatched: always the original answer
    probs = torch.stack([base,  # layer 0: no effect
                         onehot([p.positional for p in pairs[:2]] + [p.original.query for p in pairs[2:]]),
                         onehot([p.positional for p in pairs]),  # layer 2: fully positional
                         onehot([p.reflexive for p in pairs])])  # layer 3: the counterfactual's answer
    assert choose_read_layer({4: Sweep(4, [0, 1, 2, 3], pairs, probs, base, base)}) == 2
