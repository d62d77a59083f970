import re

import pytest

from interp.report import render_html, top_heads
from interp.report.figures import heatmap
from interp.scan import load_scan
from interp.scan.examples import downsample


@pytest.mark.fast
def test_report_is_self_contained(tiny_scan_dir):
    html = (tiny_scan_dir / "report.html").read_text()
    doc = load_scan(tiny_scan_dir)
    assert html == render_html(doc)
    from plotly.offline import get_plotlyjs

    assert get_plotlyjs() in html  # plotly.js embedded (its own code mentions URLs; nothing of ours does)
    ours = html.replace(get_plotlyjs(), "")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", ours), "external resource referenced"
    assert "Plotly.newPlot" in html and html.count("<script") >= 3
    assert 'id="heatmap-heads"' in html and "id='atlas'" in html and "id='head-card'" in html


@pytest.mark.fast
def test_top_heads_are_the_highest_scores(tiny_scan_dir):
    doc = load_scan(tiny_scan_dir)
    rows = [r for r in top_heads(doc, k=3) if r["metric"] == "induction"]
    scores = doc["analyses"]["heads"]["metrics"]["induction"]["scores"]
    best = sorted((s for row in scores for s in row), reverse=True)[:3]
    assert [r["score"] for r in rows] == best
    assert all(scores[r["layer"]][r["head"]] == r["score"] for r in rows)


@pytest.mark.fast
def test_heatmap_has_one_trace_per_metric_primary_first(tiny_scan_dir):
    result = load_scan(tiny_scan_dir)["analyses"]["heads"]
    fig = heatmap("heads", result)
    assert fig.data[0].name == result["primary"] and len(fig.data) == len(result["metrics"])
    assert [t.visible for t in fig.data].count(True) == 1


@pytest.mark.fast
def test_downsample_is_block_average_and_never_full_size():
    import torch

    p = torch.rand(100, 100)
    small, rows, cols = downsample(p, 48)
    assert small.shape == (48, 48) and rows[0] == 0 and len(cols) == 48
    torch.testing.assert_close(small[0, 0], p[rows[0]:rows[1], cols[0]:cols[1]].mean())
    same, _, _ = downsample(p[:10, :10], 48)
    torch.testing.assert_close(same, p[:10, :10])


@pytest.mark.fast
def test_html_escapes_untrusted_text(tiny_scan_dir):
    doc = load_scan(tiny_scan_dir)
    doc["model"]["name"] = "<script>alert(1)</script>"
    doc["examples"]["prompt"] = "</script><b>x</b>"
    html = render_html(doc)
    assert "<script>alert(1)</script>" not in html and "</script><b>x</b>" not in html
