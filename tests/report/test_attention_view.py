"""`interp.report.attention_view`: the recorded weights, hover behaviour in headless Chromium, bad input."""

import re
import shutil
import subprocess

import pytest
import torch

from interp.errors import InterpError
from interp.report import AttentionView, attention_view


def _rec():
    torch.manual_seed(0)
    p = torch.rand(2, 3, 5, 5).tril()
    return {4: p / p.sum(-1, keepdim=True)}


@pytest.mark.fast
def test_view_carries_the_recorded_pattern():
    rec, tokens = _rec(), ["<s>", " a", " b", " a", "\n"]
    view = attention_view(rec, 4, [2, 0], tokens, batch=1)
    assert isinstance(view, AttentionView)
    assert [h["label"] for h in view.heads] == ["layer 4, head 2", "layer 4, head 0"]
    torch.testing.assert_close(torch.tensor(view.heads[0]["pattern"]), rec[4][1, 2], atol=5e-5, rtol=0)
    html = view._repr_html_()
    assert html.count("<script>") == 1 and "interpAttention" in html and "http" not in html
    assert view.to_html() != html  # each render has its own element id: several views fit in one notebook


@pytest.mark.fast
@pytest.mark.parametrize("kwargs, match", [({"layer": 3, "head": 0}, "layer 3 has no recorded pattern"),
                                           ({"layer": 4, "head": 7}, "head 7 / prompt 0 is outside"),
                                           ({"layer": [4, 4], "head": [0, 1, 2]}, "2 layers and 3 heads")])
def test_view_bad_input_says_what_to_do(kwargs, match):
    with pytest.raises(InterpError, match=match):
        attention_view(_rec(), tokens=list("abcde"), **kwargs)
    with pytest.raises(InterpError, match="one token per key"):
        attention_view(_rec(), 4, 0, list("abc"))


@pytest.mark.fast
@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="needs Debian's chromium: apt-get install -y chromium")
def test_hover_shades_where_a_token_attends(tmp_path):
    rec, tokens = _rec(), ["<s>", " a", " b", " a", " c"]
    page = tmp_path / "view.html"
    attention_view(rec, 4, [1, 2], tokens).save(page)
    # hover the last token of the first panel; read the shading of every token of both panels
    probe = """<script>window.addEventListener('load', () => setTimeout(() => {
      const panels = document.querySelectorAll('.iattn-panel');
      panels[0].querySelectorAll('.iattn-tok')[4].dispatchEvent(new MouseEvent('mouseenter'));
      document.documentElement.dataset.alpha = Array.from(panels).map(p =>
      Array.from(p.querySelectorAll('.iattn-tok'))
        .map(s => (s.style.background.match(/[\\d.]+\\)$/) || ['0'])[0].replace(')',
        '')).join(',')).join(';');
      document.documentElement.dataset.info = document.querySelector('.iattn-info').textContent;
      document.documentElement.dataset.resources = performance.getEntriesByType('resource').length;
    }, 100));</script>"""
    page.write_text(page.read_text().replace("<head>", "<head>" + probe, 1))
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                          "--disable-dev-shm-usage", "--host-resolver-rules=MAP * ~NOTFOUND",
                          "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                         check=False, capture_output=True, text=True, timeout=120).stdout
    tag = re.search(r"<html[^>]*>", dom).group(0)
    alphas = [[float(x) for x in p.split(",")]
              for p in re.search(r'data-alpha="([^"]*)"', tag).group(1).split(";")]
    assert 'data-resources="0"' in tag and "token 4" in tag
    for panel, head in zip(alphas, (1, 2)):
        row = rec[4][0, head, 4]
        want = (0.85 * row / row.max()).tolist()  # shade = 0.85 x weight / the row's largest weight
        assert panel == pytest.approx(want, abs=5e-3)  # CSS keeps alpha in 1/255 steps
