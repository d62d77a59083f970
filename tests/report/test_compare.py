"""`interp compare`: differences of two scans, against the scans' own numbers; refusals exit 2."""

import json

import pytest

from interp.cli import main
from interp.report.compare import CompareError, changed_heads, compare_scans


@pytest.fixture(scope="module")
def tiny_pair(tiny_scan_dir, tmp_path_factory):
    """The tiny scan again, calibrated on head 1.0 (tau low enough that the random model has sinks)."""
    import sys
    from pathlib import Path

    from interp import Calibration
    from interp.scan import load_scan, run_scan

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scan"))
    from tiny_scan import SMALL

    base = load_scan(tiny_scan_dir)
    root = tmp_path_factory.mktemp("tiny-cal")
    cal = Calibration([(1, 0)], beta=0.4, tau=0.05).save(root / "calibration.json")
    model_dir = base["model"]["name"]
    out = root / "calibrated"
    run_scan(model_dir, analyses="heads", out=out, config=SMALL, progress=False, calibration=cal)
    return tiny_scan_dir, out


@pytest.mark.fast
def test_compare_finds_exactly_the_calibrated_head_first(tiny_pair):
    from interp.scan import load_scan

    a, b = (load_scan(p) for p in tiny_pair)
    assert b["settings"]["calibration"]["heads"] == [[1, 0]] and "calibration" not in a["settings"]
    diff = compare_scans(a, b)
    changed = changed_heads(diff)
    # layer 0 runs before the edit; in layer 1 only the calibrated head's attention differs
    assert changed and all(layer >= 1 for layer, _ in changed)
    assert {h for h in changed if h[0] == 1} == {(1, 0)}
    m = diff["metrics"]["heads.previous_token"]
    want = b["analyses"]["heads"]["metrics"]["previous_token"]["scores"][1][0] - \
        a["analyses"]["heads"]["metrics"]["previous_token"]["scores"][1][0]
    assert m["delta"][1][0] == pytest.approx(want)


@pytest.mark.fast
def test_compare_cli_writes_report_and_refuses_other_architectures(tiny_pair, tmp_path, capsys):
    a, b = tiny_pair
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "diff")]) == 0
    html = (tmp_path / "diff" / "compare.html").read_text()
    assert "diff-heads-induction" in html and "calibrated heads 1.0" in html
    assert json.loads((tmp_path / "diff" / "compare.json").read_text())["metrics"]
    other = json.loads((b / "scan.json").read_text())
    other["model"]["n_heads"] = 8
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert main(["compare", str(a), str(tmp_path / "other.json")]) == 2
    err = capsys.readouterr().err
    assert "cannot compare scans of different architectures: n_heads 4 (" in err and ") vs 8 (other)" in err
    with pytest.raises(CompareError, match="share no analysis"):
        compare_scans(json.loads((a / "scan.json").read_text()),
                      {**other, "analyses": {}, "model": json.loads(
            (a / "scan.json").read_text())["model"]})


@pytest.mark.slow
def test_compare_smollm2_plain_vs_calibrated(smollm2_scans, tmp_path):
    plain, cal = smollm2_scans["plain"], smollm2_scans["calibrated"]
    calibrated_heads = {tuple(h) for h in cal["settings"]["calibration"]["heads"]}
    assert calibrated_heads == {(13, 5), (13, 0)}
    diff = compare_scans(plain, cal)
    changed = changed_heads(diff)
    assert all(layer >= 13 for layer, _ in changed)  # nothing before the calibrated layer moves
    assert {h for h in changed if h[0] == 13} == calibrated_heads
    # retrieval trials are paired by id and get an interval
    rows = [s for s in diff["summary"] if s["ci95"] is not None]
    assert any(s["analysis"] == "retrieval" for s in rows) and any(s["analysis"] == "sinks" for s in rows)
    for s in rows:
        assert s["ci95"][0] <= s["delta"] <= s["ci95"][1]
    root = smollm2_scans["root"]
    assert main(["compare", str(root / "plain"), str(root / "calibrated"), "--out", str(tmp_path)]) == 0


@pytest.mark.fast
def test_scan_calibration_bad_input_exits_2(tmp_path, capsys):

    out = tmp_path / "scan"
    assert main(["scan", "--calibration", str(tmp_path / "missing.json"), "--out", str(out), "--quiet"]) == 2
    assert "no calibration file at" in capsys.readouterr().err and not out.exists()
    (tmp_path / "bad.json").write_text('{"heads": "12:3"}')
    assert main(["scan", "--calibration", str(tmp_path / "bad.json"), "--out", str(out), "--quiet"]) == 2
    assert "bad.json" in capsys.readouterr().err and not out.exists()


@pytest.mark.fast
def test_gradient_saliency_runs_on_a_calibrated_model(tiny_scan_dir, tmp_path):
    """Saliency's backward passes through the calibrator's edit: a calibrated scan keeps it and records it."""
    from interp import Calibration
    from interp.scan import load_scan, run_scan

    tiny_scan_model = load_scan(tiny_scan_dir)["model"]["name"]

    cal = Calibration([(1, 0), (2, 1)]).save(tmp_path / "cal.json")
    doc = run_scan(str(tiny_scan_model), analyses="saliency", out=tmp_path / "scan", calibration=cal,
                   progress=False, report=False, examples=False)
    plain = run_scan(str(tiny_scan_model), analyses="saliency", out=tmp_path / "plain", progress=False,
                     report=False, examples=False)
    assert doc["settings"]["calibration"]["heads"] == [[1, 0], [2, 1]]
    got, ref = (d["analyses"]["saliency"]["metrics"] for d in (doc, plain))
    assert got.keys() == ref.keys() and got != ref  # the calibrated heads changed what saliency measures
