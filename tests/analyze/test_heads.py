"""Head detectors vs a loop-by-loop re-implementation of the definitions over HF eager attention,
and vs TransformerLens's own `head_detector` on SmolLM2 (TL backend)."""

import pytest
import torch
from tiny import padded_batch, tiny_model

import interp
from interp.analyze import heads
from interp.errors import InterpError


def naive_scores(pattern, tokens, real):
    """Definitions of the module table, one (batch, head, query) row at a time. pattern: [b, h, q, k]."""
    b, h, n, _ = pattern.shape
    out = {m: torch.zeros(h)
           for m in ("previous_token", "duplicate_token", "induction", "entropy", "mean_distance")}
    rows = dict.fromkeys(out, 0)
    for bi in range(b):
        for i in range(n):
            if not real[bi, i]:
                continue
            t = tokens[bi]
            targets = {
                "previous_token": [i - 1] if i >= 1 and real[bi, i - 1] else [],
                "duplicate_token": [j for j in range(i) if real[bi, j] and t[j] == t[i]],
                "induction": [j for j in range(1, i + 1)
                              if real[bi, j - 1] and real[bi, j] and t[j - 1] == t[i]],
            }
            for name, keys in targets.items():
                if keys:
                    out[name] += pattern[bi, :, i, keys].sum(-1)
                    rows[name] += 1
            p = pattern[bi, :, i]
            out["entropy"] += -(p * torch.log(p.clamp(min=1e-30))).sum(-1)
            out["mean_distance"] += (p * (i - torch.arange(n)).clamp(min=0)).sum(-1)
            rows["entropy"] += 1
            rows["mean_distance"] += 1
    return {m: out[m] / max(rows[m], 1) for m in out}


def _repeated(n=3, half=10, vocab=96, seed=0):
    return heads.repeated_random_tokens(n, half, vocab, bos=0, seed=seed, low=1)


@pytest.mark.fast
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_score_batch_matches_naive_definitions_on_eager_attention(family):
    model = tiny_model(family)
    ids = _repeated()
    ids[:, 5] = ids[:, 3]  # a duplicate inside the first half, too
    got = heads.score_batch(_as_model(model), ids, chunk_rows=7).means()
    eager = tiny_model(family, attn="eager")
    with torch.no_grad():
        att = eager(input_ids=ids, output_attentions=True).attentions
    real = torch.ones_like(ids, dtype=torch.bool)
    for layer, pattern in enumerate(att):
        want = naive_scores(pattern, ids, real)
        for metric, value in want.items():
            torch.testing.assert_close(got[metric][layer], value, atol=1e-5, rtol=1e-4,
                                       msg=f"{metric} L{layer}")


@pytest.mark.fast
def test_probe_on_left_padded_batch_matches_naive():
    model = tiny_model("llama")
    batch = padded_batch(lengths=(9, 5, 12))
    ids, real = batch["input_ids"], batch["attention_mask"].bool()
    ids[0, -4:] = ids[0, -8:-4]  # repeats inside a padded row
    probe = heads.DetectorProbe(chunk_rows=5)
    probe.feed(ids, real)
    with interp.capture(_as_model(model), probes=[probe]):
        model(**batch)
    got = heads._collect(probe.sums).means()
    eager = tiny_model("llama", attn="eager")
    with torch.no_grad():
        att = eager(**batch, output_attentions=True).attentions
    for layer, pattern in enumerate(att):
        pattern = pattern * real[:, None, :, None]  # eager gives padding rows a uniform row; we skip them
        for metric, value in naive_scores(pattern, ids, real).items():
            torch.testing.assert_close(got[metric][layer], value, atol=1e-5, rtol=1e-4,
                                       msg=f"{metric} L{layer}")


@pytest.mark.fast
def test_sums_add_up_and_roundtrip_json():
    model = _as_model(tiny_model("llama"))
    ids = _repeated(n=4)
    whole = heads.score_batch(model, ids)
    # the second half through JSON, as a scan saves it
    second = heads.Sums.from_json(heads.score_batch(model, ids[2:]).to_json())
    parts = heads.score_batch(model, ids[:2]) + second
    for metric in whole.total:
        torch.testing.assert_close(parts.means()[metric], whole.means()[metric], atol=1e-6, rtol=1e-5)


@pytest.mark.fast
def test_bad_config_and_metric_raise_clear_errors():
    with pytest.raises(InterpError, match="positive integer"):
        heads.HeadsConfig(n_random=0).check()
    res = heads.HeadScores({"induction": torch.zeros(2, 4)})
    with pytest.raises(InterpError, match="unknown metric"):
        res.top("inductoin")


def _as_model(hf):
    from interp.models.model import as_model

    return as_model(hf)


@pytest.fixture(scope="module")
def smollm2_tl():
    return interp.load("smollm2", backend="tl")


@pytest.mark.slow
def test_detectors_agree_with_transformer_lens_head_detector(smollm2_tl):
    """Same model, same tokens: TL's `mul` score is our score times (rows with a target / all rows),
    a per-metric constant, so the rankings must match and the rescaled values must agree."""
    from transformer_lens.head_detector import detect_head

    m, bridge = smollm2_tl, smollm2_tl.bridge
    words = ["river", "apple", "stone", "cloud", "garden", "silver", "window", "candle", "forest", "mirror",
             "honey", "ladder", "violin", "pepper", "lantern", "meadow", "copper", "feather", "marble",
             "tiger"]
    g = torch.Generator().manual_seed(1)
    seq = " ".join(words[i] for i in torch.randperm(len(words), generator=g)[:16].tolist())
    text = seq + " " + seq
    tokens = bridge.to_tokens(text)
    ours = heads.score_batch(m, tokens.cpu())
    _, cache = bridge.run_with_cache(tokens, remove_batch_dim=True)
    n = tokens.shape[1]
    for ours_name, tl_name in [("previous_token", "previous_token_head"),
                               ("duplicate_token", "duplicate_token_head"), ("induction", "induction_head")]:
        theirs = detect_head(bridge, text, tl_name, cache=cache).float()
        mine = ours.means()[ours_name]
        rescaled = mine * ours.rows[ours_name][0].item() / n
        torch.testing.assert_close(rescaled, theirs, atol=1e-5, rtol=1e-4)  # measured: <= 6e-8
        top_ours = set(mine.flatten().topk(10).indices.tolist())
        top_theirs = set(theirs.flatten().topk(10).indices.tolist())
        # measured: 10/10 (ties may swap)
        assert len(top_ours & top_theirs) >= 9, (ours_name, top_ours, top_theirs)


@pytest.mark.fast
def test_entropy_matches_the_streaming_stats_kernel():
    """Entropy from our exact weights equals the mean row entropy of issue 3's streaming `Stats` recorder."""
    from interp.capture.stats import Stats

    model = tiny_model("llama")
    batch = padded_batch(lengths=(9, 5, 12))
    real = batch["attention_mask"].bool()
    probe, stats = heads.DetectorProbe(chunk_rows=4), Stats(with_columns=False)
    probe.feed(batch["input_ids"], real)
    with interp.capture(_as_model(model), probes=[probe, stats]):
        model(**batch)
    got = heads._collect(probe.sums).means()["entropy"]
    for layer, rows in stats.rows.items():
        want = (rows.entropy * real[:, None, :]).sum((0, 2)) / real.sum()
        torch.testing.assert_close(got[layer], want, atol=1e-5, rtol=1e-4)
