import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_scan import SMALL

import interp
from interp.analyze.heads import HeadsConfig, detect_heads
from interp.cli import main
from interp.errors import ModelNotFoundError
from interp.scan import ScanExistsError, ScanFileError, load_scan, run_scan

REPO = Path(__file__).resolve().parents[2]


def _scan(model, out, **kw):
    kw.setdefault("config", SMALL)
    return run_scan(str(model), analyses="heads", out=out, progress=False, **kw)


@pytest.mark.fast
def test_scan_scores_equal_the_analyzer_run_directly(tiny_dir, tmp_path):
    doc = _scan(tiny_dir, tmp_path / "s")
    assert load_scan(tmp_path / "s") == doc and doc["status"] == "complete"
    assert doc["model"]["n_layers"] == 3 and doc["settings"]["config"]["heads"]["n_random"] == 4
    direct = detect_heads(interp.load(str(tiny_dir)), HeadsConfig(**SMALL["heads"]))
    for metric, values in direct.scores.items():
        got = torch.tensor(doc["analyses"]["heads"]["metrics"][metric]["scores"])
        assert got.shape == (3, 4)
        torch.testing.assert_close(got, values, atol=1e-6, rtol=1e-5)
    assert (tmp_path / "s" / "report.html").stat().st_size > 1_000_000  # plotly.js is inside


@pytest.mark.fast
def test_interrupted_then_resumed_equals_uninterrupted(tiny_dir, tmp_path):
    _scan(tiny_dir, tmp_path / "whole")
    ticks = []

    def stop_after_two(name, done, total):
        ticks.append(done)
        if len(ticks) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_scan(str(tiny_dir), analyses="heads", out=tmp_path / "cut", config=SMALL, progress=stop_after_two)
    assert load_scan(tmp_path / "cut")["status"] == "running"
    assert len(list((tmp_path / "cut" / "parts" / "heads").glob("*.json"))) == 2
    with pytest.raises(ScanExistsError):  # never replaced without asking
        _scan(tiny_dir, tmp_path / "cut")
    run_scan(str(tiny_dir), out=tmp_path / "cut", resume=True, progress=False)  # settings come from scan.json
    assert (tmp_path / "cut" / "scan.json").read_bytes() == (tmp_path / "whole" / "scan.json").read_bytes()


@pytest.mark.fast
def test_killed_cli_run_resumes_to_the_same_scan_json(tiny_dir, tmp_path):
    """SIGKILL a real `interp scan` process mid-run, then `--resume`: same bytes as an uninterrupted run."""
    sets = ["--set", "heads.n_random=12", "--set", "heads.batch_size=1", "--set", "heads.half_len=12",
            "--set", "heads.text_tokens=24", "--set", "heads.n_text=2"]
    cmd = [sys.executable, "-c", "import sys; from interp.cli import main; sys.exit(main())", "scan",
           str(tiny_dir), "--analyses", "heads", "--quiet", "--no-report", *sets]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cut = tmp_path / "cut"
    proc = subprocess.Popen(cmd + ["--out", str(cut)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    parts = cut / "parts" / "heads"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(list(parts.glob("*.json"))) < 2:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert load_scan(cut)["status"] == "running", "the scan finished before it could be killed"
    args = cmd[3:]  # the same command line, in this process
    assert main(args + ["--out", str(cut), "--resume"]) == 0
    assert main(args + ["--out", str(tmp_path / "whole")]) == 0
    assert (cut / "scan.json").read_bytes() == (tmp_path / "whole" / "scan.json").read_bytes()


@pytest.mark.fast
def test_corrupt_scan_json_on_resume_is_a_clear_error_and_kept(tiny_dir, tmp_path):
    out = tmp_path / "s"
    _scan(tiny_dir, out, examples=False, report=False)
    text = (out / "scan.json").read_text()
    (out / "scan.json").write_text(text[: len(text) // 2])
    with pytest.raises(ScanFileError, match="corrupt"):
        _scan(tiny_dir, out, resume=True)
    assert (out / "scan.json").read_text() == text[: len(text) // 2]
    (out / "scan.json").write_text(json.dumps({"schema": "interp.scan", "schema_version": 1, "model": {},
                                               "settings": {}, "status": "running",
                                               "analyses": {"heads": 3}}))
    with pytest.raises(ScanFileError, match="no per-head scores"):
        _scan(tiny_dir, out, resume=True)


@pytest.mark.fast
def test_resume_refuses_other_settings(tiny_dir, tmp_path):
    out = tmp_path / "s"
    _scan(tiny_dir, out, examples=False, report=False)
    other = {"heads": {**SMALL["heads"], "n_random": 2}}
    with pytest.raises(ScanFileError, match="other settings"):
        _scan(tiny_dir, out, resume=True, config=other)
    _scan(tiny_dir, out, overwrite=True, config=other, examples=False, report=False)  # asked: replaced
    assert load_scan(out)["settings"]["config"]["heads"]["n_random"] == 2


@pytest.mark.fast
def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        run_scan(str(tmp_path / "nope"), analyses="heads", out=tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()
