"""Agreement measures against scipy and straightforward loops over the definitions."""

import pytest
import torch
from scipy import stats

from interp.analyze.agreement import (
    SaliencyReport,
    aggregate,
    agreement,
    bootstrap,
    mass_coverage,
    pearson,
    spearman,
    top_region,
    topk_overlap,
)
from interp.errors import InterpError

pytestmark = pytest.mark.fast


def _maps(steps=16, keys=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.softmax(torch.randn(steps, keys, generator=g) * 2, -1)
    s = torch.rand(steps, keys, generator=g)
    s[:, ::7] = s[:, :1]  # ties, so ranks must average
    return a, s


def test_pearson_and_spearman_match_scipy():
    a, s = _maps()
    for i in range(a.shape[0]):
        assert pearson(a, s)[i].item() == pytest.approx(stats.pearsonr(a[i], s[i]).statistic, abs=1e-5)
        assert spearman(a, s)[i].item() == pytest.approx(stats.spearmanr(a[i], s[i]).statistic, abs=1e-5)


def test_constant_row_correlates_zero_not_nan():
    a = torch.ones(2, 5)
    assert pearson(a, torch.rand(2, 5)).tolist() == [0.0, 0.0]


def test_topk_and_coverage_match_loops():
    a, s = _maps(steps=6, keys=12)
    k, region = 4, 0.5
    for i in range(6):
        ta = set(sorted(range(12), key=lambda j: -a[i, j].item())[:k])
        ts = set(sorted(range(12), key=lambda j: -s[i, j].item())[:k])
        assert topk_overlap(a, s, k)[i].item() == pytest.approx(len(ta & ts) / k)
        # top region: add positions by decreasing attention until the region's mass is reached
        chosen, mass = [], 0.0
        for j in sorted(range(12), key=lambda j: -a[i, j].item()):
            if mass >= region:
                break
            chosen.append(j)
            mass += a[i, j].item() / a[i].sum().item()
        assert top_region(a, region)[i].nonzero().flatten().tolist() == sorted(chosen)
        expect = sum(s[i, j].item() for j in chosen) / s[i].sum().item()
        assert mass_coverage(a, s, region)[i].item() == pytest.approx(expect, rel=1e-5)


def test_self_agreement_is_one_and_shuffled_is_near_zero():
    a, _ = _maps(steps=64, keys=200)
    same = agreement(a, a)
    assert same.pearson.mean == pytest.approx(1.0) and same.spearman.mean == pytest.approx(1.0)
    assert same.topk.mean == 1.0
    shuffled = a[:, torch.randperm(200, generator=torch.Generator().manual_seed(1))]
    other = agreement(a, shuffled)
    assert abs(other.pearson.mean) < 0.05 and abs(other.spearman.mean) < 0.05
    assert other.pearson.low < 0 < other.pearson.high or abs(other.pearson.mean) < 0.02
    assert other.topk_chance.mean == 5 / 200 and abs(other.topk.mean - 5 / 200) < 0.03


def test_bootstrap_interval_brackets_mean_and_is_reproducible():
    v = torch.linspace(0, 1, 50)
    e1, e2 = bootstrap(v, seed=3), bootstrap(v, seed=3)
    assert e1 == e2 and e1.low < e1.mean < e1.high and e1.mean == pytest.approx(0.5)
    with pytest.raises(InterpError, match="at least one token"):
        bootstrap(torch.tensor([]))


def test_aggregations_and_report():
    a = torch.softmax(torch.randn(2, 3, 4, 10), -1)
    assert torch.allclose(aggregate(a, "all"), a.mean((0, 1)))
    assert torch.allclose(aggregate(a, "layer:1"), a[1].mean(0))
    assert torch.allclose(aggregate(a, [(0, 2), (1, 0)]), (a[0, 2] + a[1, 0]) / 2)
    with pytest.raises(InterpError, match="Unknown aggregation"):
        aggregate(a, "rows")
    r = SaliencyReport(
        "toy",
        "occlusion",
        "decoder",
        a[1, 2].clone(),
        a,
        torch.ones(2, 3, 4),
        [str(i) for i in range(10)],
        list("wxyz"),
        {"chosen": [(1, 2)]},
    )
    table = r.table(per_head=True)
    assert table["heads chosen"].pearson.mean == pytest.approx(1.0) and table["head 1.2"].spearman.mean == 1.0
    assert r.head_grid()[1, 2].item() == pytest.approx(1.0)
    assert r.figure_heads().data[0].z.shape == (2, 3) and len(r.figure_token(-1).data) == 2
    assert set(r.to_json()["agreement"]) >= {"all_heads", "layer 0", "layer 1", "heads chosen"}


def test_mismatched_maps_are_refused():
    with pytest.raises(InterpError, match="same real input"):
        agreement(torch.rand(3, 5), torch.rand(3, 6))


def test_pooled_table_pools_rows_of_all_reports():
    from interp.analyze.agreement import pooled_head_grid, pooled_table

    def report(steps, keys, seed):
        g = torch.Generator().manual_seed(seed)
        a = torch.softmax(torch.randn(1, 2, steps, keys, generator=g), -1)
        return SaliencyReport(
            "toy",
            "m",
            "decoder",
            torch.rand(steps, keys, generator=g),
            a,
            torch.ones(1, 2, steps),
            [""] * keys,
            [""] * steps,
            {},
        )

    r1, r2 = report(3, 7, 0), report(5, 11, 1)
    pooled = pooled_table([r1, r2])["all_heads"].pearson.mean
    rows = torch.cat([pearson(r.attention.mean((0, 1)), r.saliency) for r in (r1, r2)])
    assert pooled == pytest.approx(rows.mean().item(), abs=1e-6)
    grid = pooled_head_grid([r1, r2])
    expect = (r1.head_grid() * 3 + r2.head_grid() * 5) / 8
    torch.testing.assert_close(grid, expect)


def test_drop_first_renormalises_the_rest():
    a = torch.softmax(torch.randn(2, 3, 4, 10), -1)
    r = SaliencyReport(
        "toy", "m", "decoder", torch.rand(4, 10), a, torch.ones(2, 3, 4), list("abcdefghij"), list("wxyz"), {}
    )
    d = r.drop_first()
    torch.testing.assert_close(d.attention.sum(-1), torch.ones(2, 3, 4))
    torch.testing.assert_close(d.attention, a[..., 1:] / a[..., 1:].sum(-1, keepdim=True))
    torch.testing.assert_close(d.input_mass, 1 - a[..., 0])
    assert d.inputs == list("bcdefghij") and d.saliency.shape == (4, 9)
    with pytest.raises(InterpError, match="at least two must remain"):
        r.drop_first(9)
