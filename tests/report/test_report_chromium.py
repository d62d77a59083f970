"""report.html in headless Chromium (Debian's `chromium`), with every network route closed."""

import re
import shutil
import struct
import subprocess
import zlib

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="needs Debian's chromium: apt-get install -y chromium")

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
           "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
           "--virtual-time-budget=20000", *args]
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
    assert n_plots >= 2  # the heads heatmap and the correlation scatter
    assert dom.count('class="js-plotly-plot"') + dom.count("js-plotly-plot") >= 2
    assert "heatmap-heads" in dom and "<tr>" in dom

    shot = tmp_path / "shot.png"
    _chromium(f"--screenshot={shot}", "--window-size=1200,1800", page.as_uri())
    width, height, ink = _png_ink(shot)
    assert (width, height) == (1200, 1800) and ink > 0.02, ink


# Injected first in <head>: after load, uses the page like a person (sort, open a card, hover a token)
# and writes what it saw on <html data-*>; --dump-dom then returns it.
DRIVE = """<script>
window.addEventListener('error', e => { const h = document.documentElement;
  h.dataset.errors = (h.dataset.errors || '') + (e.message || 'resource error') + ' | '; }, true);
window.addEventListener('load', () => setTimeout(() => { const h = document.documentElement, d = h.dataset;
  const nav = performance.getEntriesByType('navigation')[0];
  d.loadMs = Math.round(nav.loadEventStart);
  d.rows = document.querySelectorAll('#atlas tbody tr').length;
  const th = document.querySelector('#atlas th[data-key="SORTKEY"]');
  th.click(); d.firstDesc = document.querySelector('#atlas tbody tr').dataset.head;
  th.click(); d.firstAsc = document.querySelector('#atlas tbody tr').dataset.head;
  const f = document.getElementById('atlas-filter'); f.value = 'FILTER'; f.dispatchEvent(new Event('input'));
  d.filtered = Array.from(document.querySelectorAll('#atlas tbody tr')).filter(r => !r.hidden).length;
  f.value = ''; f.dispatchEvent(new Event('input'));
  document.querySelector('#atlas tbody tr[data-head="CARD"]').click();
  const card = document.getElementById('head-card');
  d.cardHidden = card.hidden; d.cardTitle = document.getElementById('card-title').textContent;
  d.cardRows = document.querySelectorAll('#card-scores tbody tr').length;
  const toks = card.querySelectorAll('.iattn-tok'); d.cardTokens = toks.length;
  toks[toks.length - 1].dispatchEvent(new MouseEvent('mouseenter'));
  d.shaded = Array.from(toks).filter(s => s.style.background.startsWith('rgba')).length;
  d.plots = document.querySelectorAll('.js-plotly-plot .main-svg').length;
  d.resources = performance.getEntriesByType('resource').map(r => r.name).join(' ');
  d.done = '1'; }, 300));
</script>"""


def _drive(html: str, tmp_path, sort_key: str, card: str, filter_text: str) -> dict:
    page = tmp_path / "report.html"
    spy = DRIVE.replace("SORTKEY", sort_key).replace("CARD", card).replace("FILTER", filter_text)
    page.write_text(html.replace("<head>", "<head>" + spy, 1))
    dom = _chromium("--dump-dom", page.as_uri()).stdout
    tag = re.search(r"<html[^>]*>", dom).group(0)
    return {k.replace("data-", "").replace("-", ""): v
            for k, v in re.findall(r'(data-[a-z-]+)="([^"]*)"', tag)}


def _check_atlas(got: dict, doc: dict, key: str, card: str) -> None:
    analysis, metric = key.split(".")
    scores = doc["analyses"][analysis]["metrics"][metric]["scores"]
    m = doc["model"]
    assert got.get("done") == "1" and "errors" not in got, got
    assert int(got["rows"]) == m["n_layers"] * m["n_heads"]
    flat = [s for row in scores for s in row]
    layer, head = map(int, got["firstdesc"].split("."))
    assert scores[layer][head] == max(flat)  # sorted by the page = the scan's highest score
    layer, head = map(int, got["firstasc"].split("."))
    assert scores[layer][head] == min(flat)
    assert got["cardhidden"] == "false" and got["cardtitle"] == "layer {}, head {}".format(*card.split("."))
    shown = doc["examples"]["heads"][card]["cols"]  # one token per stored column (a long prompt is binned)
    assert int(got["cardrows"]) >= 1 and int(got["cardtokens"]) == len(shown)
    assert int(got["shaded"]) >= 1 and int(got["plots"]) >= 2
    assert "http" not in got["resources"], got["resources"]


@pytest.mark.fast
def test_atlas_sorts_filters_and_opens_a_card(tiny_scan_dir, tmp_path):
    from interp.scan import load_scan

    doc = load_scan(tiny_scan_dir)
    got = _drive((tiny_scan_dir / "report.html").read_text(), tmp_path, "heads.induction", "2.1", "2.")
    _check_atlas(got, doc, "heads.induction", "2.1")
    assert int(got["filtered"]) == doc["model"]["n_heads"]  # "2." matches the heads of layer 2 only


@pytest.mark.slow
def test_smollm2_report_atlas_in_chromium(smollm2_scans, tmp_path):
    from interp.report import render_html

    doc = smollm2_scans["plain"]
    html = render_html(doc)
    size = len(html.encode())
    got = _drive(html, tmp_path, "retrieval.retrieval", "18.6", "induction")
    _check_atlas(got, doc, "retrieval.retrieval", "18.6")
    assert int(got["rows"]) == 270
    assert 0 < int(got["filtered"]) < 270
    load_ms = _load_ms(html, tmp_path)
    print(f"report {size / 1e6:.2f} MB, load event {load_ms} ms (best of 3)")
    assert size < 8e6 and load_ms < 3000, (size, load_ms)


def _load_ms(html: str, tmp_path, runs: int = 3) -> int:
    """The load event's time in headless Chromium (real time, no virtual clock), best of `runs`: the
    machine is shared, the best run is the page's own cost."""
    stamp = ("<script>window.addEventListener('load', () => { document.documentElement.dataset.load = "
             "Math.round(performance.getEntriesByType('navigation')[0].loadEventStart); });</script>")
    page = tmp_path / "timed.html"
    page.write_text(html.replace("<head>", "<head>" + stamp, 1))
    times = []
    for _ in range(runs):
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9", "--dump-dom",
               page.as_uri()]
        dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False).stdout
        times.append(int(re.search(r'data-load="(\d+)"', dom).group(1)))
    return min(times)
