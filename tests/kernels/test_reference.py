import pytest
import torch

from interp.errors import InterpError
from interp.kernels import attention_stats, column_stats, reference

MASKS = ("causal", "padded_bool", "padded_float", "alibi_float", "decode", "full")
SPANS = [(0, 1), (2, 5), (-3, None)]


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def check_rows(rows, ref):
    close(rows.lse, ref["lse"])
    close(rows.max_score, ref["max_score"])
    assert torch.equal(rows.argmax, ref["argmax"])
    close(rows.entropy, ref["entropy"])
    assert torch.equal(rows.n_visible, ref["n_visible"])


@pytest.mark.fast
@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("heads,kv_heads,d", [(4, 4, 16), (6, 2, 24), (9, 3, 64)])
def test_matches_full_eager_pattern(case, eager, mask_kind, heads, kv_heads, d):
    q, k, v, mask, causal = case(mask_kind, heads=heads, kv_heads=kv_heads, d=d, q_len=17)
    scaling = d**-0.5
    ref = eager(q, k, mask, is_causal=causal, scaling=scaling, spans=SPANS, top_k=3)
    rows, cols, out = reference.stats(q, k, mask, scaling=scaling, is_causal=causal, spans=SPANS, top_k=3,
                                      # 5 does not divide 17: a ragged last chunk
                                      columns=True, value=v, chunk=5)
    check_rows(rows, ref)
    close(rows.span_mass, ref["span_mass"])
    close(rows.topk_prob, ref["topk_prob"])
    real = ref["topk_prob"] > 0  # past the visible keys the index is -1
    assert torch.equal(rows.topk_index[real], ref["topk_index"][real])
    assert (rows.topk_index[~real] == -1).all()
    close(cols.total, ref["col_total"])
    assert torch.equal(cols.count, ref["col_count"])
    expected_out = ref["pattern"] @ v.repeat_interleave(heads // kv_heads, dim=1)
    close(out, expected_out.transpose(1, 2))


@pytest.mark.fast
def test_softcap_and_column_second_pass(case, eager):
    q, k, _, mask, causal = case("padded_bool", q_len=11)
    q = q * 8  # large scores so the cap bites
    ref = eager(q, k, mask, is_causal=causal, scaling=0.25, softcap=5.0)
    rows = attention_stats(q, k, mask, scaling=0.25, is_causal=causal, softcap=5.0, chunk=4)
    check_rows(rows, ref)
    cols = column_stats(q, k, mask, rows.lse, scaling=0.25, is_causal=causal, softcap=5.0, chunk=3)
    close(cols.total, ref["col_total"])
    close(cols.mean, ref["col_total"] / ref["col_count"].clamp(min=1)[:, None])


@pytest.mark.fast
def test_rows_that_see_nothing_are_finite_and_documented():
    q, k = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)
    mask = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    mask[..., 1, :] = False  # query 1 sees no key
    rows, cols, _ = reference.stats(q, k, mask, scaling=1.0, is_causal=True, spans=[(0, 2)], top_k=2,
                                    columns=True)
    assert rows.n_visible[0, 1] == 0
    assert (rows.argmax[:, :, 1] == -1).all() and (rows.topk_index[:, :, 1] == -1).all()
    for t in (rows.lse, rows.max_score, rows.entropy, rows.span_mass, rows.topk_prob):
        assert torch.isfinite(t).all() and (t[:, :, 1] == 0).all()
    assert torch.isfinite(cols.total).all() and cols.count[0].tolist() == [3, 3, 3, 3]


@pytest.mark.fast
def test_half_precision_inputs_use_fp32_math(case, eager):
    q, k, _, mask, causal = case("padded_float", dtype=torch.bfloat16)
    rows = attention_stats(q, k, mask.bfloat16(), scaling=0.25, is_causal=causal)
    ref = eager(q, k, mask, is_causal=causal, scaling=0.25)
    assert rows.lse.dtype == torch.float32
    close(rows.lse, ref["lse"])


@pytest.mark.fast
def test_top_k_larger_than_keys_is_padded():
    q, k = torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4)
    rows = attention_stats(q, k, None, scaling=1.0, is_causal=True, top_k=5)
    assert rows.topk_index[0, 0, 0].tolist() == [0, -1, -1, -1, -1]
    torch.testing.assert_close(rows.topk_prob.sum(-1), torch.ones(1, 1, 3))


@pytest.mark.fast
def test_per_prompt_spans(case, eager):
    q, k, _, mask, causal = case("padded_bool", batch=2, q_len=9)
    bounds = torch.tensor([[[0, 1]], [[4, 6]]])  # a different span for each prompt
    rows = attention_stats(q, k, mask, scaling=0.25, is_causal=causal, spans=bounds)
    p = eager(q, k, mask, is_causal=causal, scaling=0.25)["pattern"]
    close(rows.span_mass[0, ..., 0], p[0, ..., 0:1].sum(-1))
    close(rows.span_mass[1, ..., 0], p[1, ..., 4:6].sum(-1))


@pytest.mark.fast
def test_bad_inputs_raise_clear_errors():
    q, k = torch.randn(1, 4, 3, 8), torch.randn(1, 3, 3, 8)
    with pytest.raises(InterpError, match="multiple of the number of kv heads"):
        attention_stats(q, k, None, scaling=1.0, is_causal=True)
    with pytest.raises(InterpError, match="expected query"):
        attention_stats(q[0], k, None, scaling=1.0, is_causal=True)
    with pytest.raises(InterpError, match="top_k"):
        attention_stats(q, k[:, :2], None, scaling=1.0, is_causal=True, top_k=-1)
    with pytest.raises(InterpError, match="start, stop"):
        attention_stats(q, k[:, :2], None, scaling=1.0, is_causal=True, spans=[3])
    with pytest.raises(InterpError, match="spans tensor"):
        attention_stats(q, k[:, :2], None, scaling=1.0, is_causal=True, spans=torch.zeros(2, 1, 2))
    with pytest.raises(InterpError, match="unknown stats backend"):
        attention_stats(q, k[:, :2], None, scaling=1.0, is_causal=True, backend="cuda-magic")


@pytest.mark.fast
@pytest.mark.parametrize("k", [5, 64, 255, 256, 300, 2049])
def test_row_max_equals_torch_max_with_first_index_on_ties(k):
    g = torch.Generator().manual_seed(k)
    s = torch.randint(-3, 3, (2, 3, 7, k), generator=g).float()  # few values: many ties per row
    s[0, 0, 0] = torch.finfo(torch.float32).min  # a fully hidden row
    m, arg = reference.row_max(s)
    assert torch.equal(m, s.amax(-1))
    first = (s == s.amax(-1, keepdim=True)).float().argmax(-1)  # first maximal key, computed independently
    assert torch.equal(arg, first)


@pytest.mark.fast
@pytest.mark.parametrize("mask_kind", ["causal", "padded_bool", "decode"])
def test_learned_sinks_take_mass_like_gpt_oss_eager(case, mask_kind):
    """gpt-oss style sinks: one extra softmax logit per head that is not a key, dropped after the softmax."""
    q, k, v, mask, causal = case(mask_kind, heads=4, kv_heads=2, q_len=9)
    sinks = torch.tensor([-2.0, 0.5, 3.0, 8.0])  # from negligible to most of the mass
    scaling = 0.25
    kk, vv = (x.repeat_interleave(2, dim=1) for x in (k, v))
    s = q @ kk.transpose(-1, -2) * scaling
    vis = torch.ones(s.shape[-2:], dtype=torch.bool).tril(s.shape[-1] - s.shape[-2]) if mask is None else mask
    s = s.masked_fill(~vis, float("-inf"))
    full = torch.cat([s, sinks.view(1, 4, 1, 1).expand(*s.shape[:3], 1)], -1)
    p = torch.softmax(full, -1)[..., :-1]  # [b, h, q, key]
    rows, cols, out = reference.stats(q, k, mask, scaling=scaling, is_causal=causal, spans=[(0, 2)],
                                      columns=True, value=v, sinks=sinks, chunk=4)
    empty = ~vis.any(-1)  # rows that see no key report lse 0 (documented); the sink takes all their mass
    close(rows.lse, torch.where(empty, 0.0, torch.logsumexp(full, -1)))
    close(rows.entropy, -torch.special.xlogy(p, p).sum(-1))
    close(rows.span_mass[..., 0], p[..., :2].sum(-1))
    close(cols.total, p.sum(2))
    close(out, (p @ vv).transpose(1, 2))
    assert torch.equal(rows.argmax, torch.where(empty, -1, s.argmax(-1)))


@pytest.mark.fast
@pytest.mark.parametrize("chunk", [3, 7, 64])
def test_causal_prompt_over_a_cached_prefix(chunk):
    """mask None, 7 new queries over 19 keys (12 cached): query i sees keys 0..12 + i (the triangle path)."""
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, 4, 7, 8, generator=g)
    k, v = torch.randn(1, 2, 19, 8, generator=g), torch.randn(1, 2, 19, 8, generator=g)
    kk, vv = (x.repeat_interleave(2, dim=1) for x in (k, v))
    s = (q @ kk.transpose(-1, -2) * 0.3).masked_fill(~torch.ones(7, 19, dtype=torch.bool).tril(12),
                                                     float("-inf"))
    p = s.softmax(-1)
    rows, cols, out = reference.stats(q, k, None, scaling=0.3, is_causal=True, columns=True, value=v,
                                      chunk=chunk)
    close(rows.lse, torch.logsumexp(s, -1))
    close(rows.entropy, -torch.special.xlogy(p, p).sum(-1))
    assert torch.equal(rows.argmax, s.argmax(-1))
    assert rows.n_visible[0].tolist() == list(range(13, 20))
    close(cols.total, p.sum(2))
    assert cols.count[0].tolist() == [7] * 13 + [6, 5, 4, 3, 2, 1]
    close(out, (p @ vv).transpose(1, 2))


@pytest.mark.fast
def test_a_shared_workspace_changes_no_result_and_nothing_returned_aliases_it(case):
    """Two calls through one Workspace (as a capture session's layers do) equal fresh calls."""
    from interp.kernels.workspace import Workspace

    ws = Workspace()
    kwargs = {"scaling": 0.3, "is_causal": True, "spans": [(0, 2)], "columns": True, "chunk": 4}
    results = []
    for seed, heads in ((0, 4), (1, 1)):  # one head: the output's transpose would be contiguous
        q, k, v, mask, _ = case("causal", heads=heads, kv_heads=1, q_len=9, seed=seed)
        results.append((reference.stats(q, k, mask, value=v, workspace=ws, **kwargs),
                        reference.stats(q, k, mask, value=v, **kwargs)))
    for (rows, cols, out), (rows_ref, cols_ref, out_ref) in results:  # compared after both calls
        close(out, out_ref)
        close(rows.lse, rows_ref.lse)
        close(rows.span_mass, rows_ref.span_mass)
        close(cols.total, cols_ref.total)
