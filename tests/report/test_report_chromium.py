"""report.html in headless Chromium (Debian's `chromium`), with every network route closed."""

import re
import shutil
import struct
import subprocess
import zlib

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium: apt-get install -y chromium")

# Injected first in <head>: records JS errors and every resource the page fetches on <html data-*>.
SPY = """<script>
window.addEventListener('error', e => { const h = document.documentElement;
  h.dataset.errors = (h.dataset.errors || '') + (e.message || 'resource error') + ' | '; }, true);
window.addEventListener('load', () => setTimeout(() => { const h = document.documentElement;
  h.dataset.resources = performance.getEntriesByType('resource').map(r => r.name).join(' ');
  h.dataset.plots = document.querySelectorAll('.js-plotly-plot .main-svg').length;
  h.dataset.done = '1'; }, 500));
</script>"""


def _chromium(*args, timeout=120):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9", "--virtual-time-budget=20000",
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def _png_ink(path) -> tuple[int, int, float]:
    """Width, height and the share of non-white bytes of a PNG's raw scanlines (no PIL needed)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    idat, i = b"", 8
    while i < len(data):
        n, kind = struct.unpack(">I4s", data[i:i + 8])
        if kind == b"IDAT":
            idat += data[i + 8:i + 8 + n]
        i += 12 + n
    raw = zlib.decompress(idat)
    return width, height, sum(b not in (0, 255) for b in raw[::97]) / len(raw[::97])


@pytest.mark.fast
def test_report_renders_offline_without_js_errors(tiny_scan_dir, tmp_path):
    html = (tiny_scan_dir / "report.html").read_text()
    page = tmp_path / "report.html"
    page.write_text(html.replace("<head>", "<head>" + SPY, 1))
    dom = _chromium("--dump-dom", page.as_uri()).stdout
    head = re.search(r"<html[^>]*>", dom).group(0)
    assert 'data-done="1"' in head, head
    assert "data-errors" not in head, head
    resources = re.search(r'data-resources="([^"]*)"', head).group(1)
    assert "http" not in resources, resources
    n_plots = int(re.search(r'data-plots="(\d+)"', head).group(1))
    assert n_plots >= 2  # the heads heatmap and the drill-down pattern
    assert dom.count('class="js-plotly-plot"') + dom.count("js-plotly-plot") >= 2
    assert "heatmap-heads" in dom and "<tr>" in dom

    shot = tmp_path / "shot.png"
    _chromium(f"--screenshot={shot}", "--window-size=1200,1800", page.as_uri())
    width, height, ink = _png_ink(shot)
    assert (width, height) == (1200, 1800) and ink > 0.02, ink
