"""torchrun runs (2 CPU ranks, gloo) of the analyzers and of `interp scan|prune|calibrate` equal one
process."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "scan"))
from tiny_scan import save_tiny  # noqa: E402

SETS = {"retrieval": {"lengths": [120], "depths": [0.3, 0.7], "n_needles": 2, "batch_size": 2,
                      "max_new_tokens": 3},
        "sinks": {"n_prompts": 4, "words": 30, "length": 16, "batch_size": 2},
        "heads": {"n_random": 4, "half_len": 12, "batch_size": 2, "text_tokens": 24, "n_text": 2}}
SCAN = ["--analyses", "heads,sinks,retrieval", "--quiet", "--no-report"] + [
    a for name, s in SETS.items() for k, v in s.items() for a in ("--set", f"{name}.{k}={json.dumps(v)}")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(save_tiny(tmp_path_factory.mktemp("tiny")))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{HERE.parent}{os.pathsep}{HERE}"}


def torchrun(*args, n: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n), "--master-addr",
            "127.0.0.1", "--master-port", str(_port()), *map(str, args)]


def interp_cmd(*args, n: int | None = 2) -> list[str]:
    return torchrun("-m", "interp.cli", *args, n=n) if n else [sys.executable, "-m", "interp.cli",
                                                               *map(str, args)]


def check(cmd) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def scan_doc(out: Path) -> dict:
    return json.loads((out / "scan.json").read_text())


@pytest.mark.fast
def test_scan_two_ranks_equals_one_and_a_killed_run_resumes(tiny, tmp_path):
    check(interp_cmd("scan", tiny, "--out", tmp_path / "one", *SCAN, n=None))
    check(interp_cmd("scan", tiny, "--out", tmp_path / "two", *SCAN))
    one = scan_doc(tmp_path / "one")
    assert one["status"] == "complete" and scan_doc(tmp_path / "two") == one
    assert not list((tmp_path / "two").glob(".*.tmp"))
    # kill a 2-rank scan once its first units are saved, resume it with 2 ranks
    out = tmp_path / "killed"
    proc = subprocess.Popen(interp_cmd("scan", tiny, "--out", out, *SCAN), env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    parts = out / "parts" / "sinks"
    while not list(parts.glob("*.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert scan_doc(out)["status"] == "running"
    check(interp_cmd("scan", tiny, "--out", out, "--resume", "--quiet", "--no-report"))
    assert scan_doc(out) == one


@pytest.mark.fast
def test_analyzers_two_ranks_equal_one_and_bad_setups_fail(tiny, tmp_path):
    import parallel_units_job

    alone = parallel_units_job.run(tiny, tmp_path / "alone.jsonl")
    check(torchrun(HERE / "parallel_units_job.py", tiny, tmp_path / "two.pt"))
    two = torch.load(tmp_path / "two.pt", weights_only=False)
    bad = two.pop("bad")
    assert two["scores"] == alone["scores"] and two["trial_ids"] == alone["trial_ids"]
    assert two["search"] == alone["search"] and two["prune"] == alone["prune"]
    assert two["search"]["evaluations"] == 8 and len(two["prune"]["rows"]) == 4
    assert two["sinks"] == alone["sinks"] and len(two["sinks"]["first"]) == 6  # 3 batches over 2 ranks
    # rank 0 alone wrote the checkpoint: one line per trial, the same trials as one process
    lines = (tmp_path / "two.jsonl").read_text().splitlines()
    alone = (tmp_path / "alone.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["id"] for x in lines) == sorted(json.loads(x)["id"] for x in alone)
    assert "2 ranks but only 1 work units" in bad["work"] and "ranks [1]" in bad["same"]


@pytest.mark.fast
def test_cli_bad_setups_exit_2(tiny, tmp_path):
    # more ranks than retrieval batches: one clear line, exit 2 (torchrun reports the ranks' failure)
    sets = ["--set", "retrieval.lengths=[120]", "--set", "retrieval.depths=[0.5]", "--set",
            "retrieval.n_needles=1", "--set", "retrieval.max_new_tokens=2"]
    proc = subprocess.run(interp_cmd("scan", tiny, "--analyses", "retrieval", "--out", tmp_path / "s",
                                     "--quiet", *sets), env=_env(), capture_output=True, text=True,
                                     timeout=300)
    assert proc.returncode != 0 and "2 ranks but only 1 work units" in proc.stderr
    assert "exitcode  : 2" in proc.stderr or "exit code 2" in proc.stderr.lower()
    # NCCL asked for on a machine without CUDA
    if not torch.cuda.is_available():
        env = {**_env(), "INTERP_DIST_BACKEND": "nccl", "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_port())}
        proc = subprocess.run([sys.executable, "-m", "interp.cli", "scan", tiny, "--out", tmp_path / "n"],
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "NCCL needs CUDA GPUs" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("command, outputs", [
    (["calibrate", "--task", "sst2", "--shots", "2", "--dev", "8", "--test", "8", "--budget", "6",
      "--max-heads", "2", "--skip-first", "0", "--skip-last", "0", "--tau", "0.05", "--no-progress"],
     ["report.json"]),
    (["prune", "--top-k", "1", "--random-draws", "1", "--lengths", "120", "--depths", "0.2,0.8",
      "--eval-lengths", "120", "--eval-depths", "0.5", "--needles", "2", "--ppl-windows", "1",
      "--ppl-window", "32", "--max-new-tokens", "3", "--batch-size", "2", "--no-progress"],
     ["prune.json", "retrieval_heads.json"]),
], ids=["calibrate", "prune"])
def test_cli_under_torchrun_writes_what_one_process_writes(tiny, tmp_path, command, outputs):
    name, *rest = command
    check(interp_cmd(name, tiny, *rest, "--out", tmp_path / "alone", n=None))
    check(interp_cmd(name, tiny, *rest, "--out", tmp_path / "two"))
    for file in outputs:
        alone, two = (json.loads((tmp_path / d / file).read_text()) for d in ("alone", "two"))
        for doc in (alone, two):
            doc.pop("seconds", None)
        assert two == alone, file
