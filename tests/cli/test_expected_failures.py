"""Every expected failure is one line on stderr and exit code 2, raised before work is done or written.

The CLI runs in-process (`interp.cli.main(argv)`) on a tiny random Llama saved with SmolLM2's
tokenizer; the API cases use the same model.
"""

import json
import shutil

import pytest
import torch
from tiny_scan import SMALL

import interp
from interp.capture import Patterns
from interp.cli import main
from interp.errors import CorruptModelError, InterpError, UnsupportedArchitectureError
from interp.intervene.ablate import ablate

pytestmark = pytest.mark.fast


def run(capsys, *argv) -> str:
    """Run the CLI, assert exit code 2 with a one-line message, return it."""
    assert main([str(a) for a in argv]) == 2
    full = capsys.readouterr().err
    err = full.strip().splitlines()[-1]  # earlier lines: transformers' progress bars
    assert err.startswith(f"interp {argv[0]}: error: ") and "Traceback" not in full, full
    assert sum(line.startswith("interp ") for line in full.splitlines()) == 1, full
    return err


def _set(key, value):
    return ["--set", f"heads.{key}={value}"]


def small_sets():
    return [a for k, v in SMALL["heads"].items() for a in _set(k, v)]


def test_scan_bad_settings_write_nothing_and_a_fixed_rerun_works(tiny_dir, tmp_path, capsys):
    out = tmp_path / "s"
    base = ["scan", tiny_dir, "--analyses", "heads", "--out", out, "--quiet", "--no-report"]
    assert "use an integer" in run(capsys, *base, *_set("n_random", "abc"))
    assert "use a positive integer" in run(capsys, *base, *_set("n_random", -3))
    assert "use an integer" in run(capsys, *base, *_set("chunk_rows", 1.5))
    assert "cannot export gif" in run(capsys, *base, "--export", "gif")
    assert not out.exists()
    # a budget too small for one query row fails in the first unit: nothing finished, nothing kept
    assert "raise max_memory" in run(capsys, *base, *small_sets(), "--max-memory", "1KB")
    assert not (out / "scan.json").exists()
    assert main([str(a) for a in (*base, *small_sets())]) == 0  # the fixed rerun, same --out
    capsys.readouterr()
    assert json.loads((out / "scan.json").read_text())["status"] == "complete"
    err = run(capsys, *base, *small_sets(), "--resume", "--dtype", "bfloat16")
    assert "--dtype float32, not bfloat16" in err and "fingerprint" not in err
    # budget only
    assert main([str(a) for a in (*base, *small_sets(), "--resume", "--max-memory", "4GB")]) == 0


@pytest.fixture
def broken(tiny_dir, tmp_path):
    """Copies of the tiny model folder, each broken in one way."""
    def make(kind):
        d = tmp_path / kind
        shutil.copytree(tiny_dir, d)
        if kind == "no-weights":
            for f in d.glob("*.safetensors"):
                f.unlink()
        elif kind == "truncated":
            f = next(d.glob("*.safetensors"))
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        elif kind == "unknown-type":
            cfg = json.loads((d / "config.json").read_text())
            (d / "config.json").write_text(json.dumps({**cfg, "model_type": "no-such-arch"}))
        return d
    return make


@pytest.mark.parametrize("kind, message",
                         [("no-weights", "no weights"), ("truncated", "cannot read the weights"),
                                           ("unknown-type", "does not know the model's architecture")])
def test_broken_model_folders(broken, kind, message, capsys):
    folder = broken(kind)
    assert message in run(capsys, "info", folder)
    err = {"no-weights": CorruptModelError, "truncated": CorruptModelError,
           "unknown-type": UnsupportedArchitectureError}[kind]
    with pytest.raises(err, match=message):
        interp.load(str(folder))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_build(tiny_dir, capsys):
    assert "not available" in run(capsys, "info", tiny_dir, "--device", "cuda")
    assert "cannot read device" in run(capsys, "info", tiny_dir, "--device", "gpu0")


def test_out_under_a_file_fails_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker / "sub"
    assert "which is a file" in run(capsys, "calibrate", "no-such-model", "--task", "sst2", "--out", out)
    assert "which is a file" in run(capsys, "saliency", "no-such-model", "--input", "hi", "--out", out)
    assert "which is a file" in run(capsys, "binding", "no-such-model", "--out", out)
    assert "which is a file" in run(capsys, "prune", "no-such-model", "--out", out)
    assert "is a file, not a folder" in run(capsys, "saliency", "no-such-model", "--input", "hi", "--out",
                                            blocker)


def test_prune_scores_not_json(tiny_dir, tmp_path, capsys):
    scores = tmp_path / "scores.json"
    scores.write_text("not json {")
    err = run(capsys, "prune", tiny_dir, "--scores", scores, "--top-k", "2", "--out", tmp_path / "p",
              "--no-progress")
    assert "not valid JSON" in err


@pytest.mark.parametrize("content", [b"3", b"null", b'{"heads": "12:3"}', b'{"heads": [[1, 2.5]]}',
                                     b'{"heads": [[1, 2]], "beta": "x"}', b"\x89PNG\x00\xff"])
def test_malformed_calibration_files(tmp_path, capsys, content):
    path = tmp_path / "calibration.json"
    path.write_bytes(content)
    err = run(capsys, "calibrate", "no-such-model", "--task", "sst2", "--calibration", path, "--out",
              tmp_path / "c")
    assert "calibration" in err


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return interp.load(str(tiny_dir))


def test_encode_empty(tiny):
    with pytest.raises(InterpError, match="non-empty list"):
        tiny.encode([])
    with pytest.raises(InterpError, match="no tokens"):
        tiny.encode([""], add_special_tokens=False)


@pytest.mark.parametrize("kwargs, message", [
    ({"layers": "5"}, "list of integers"), ({"heads": [1.5]}, "must be an integer"),
    ({"queries": slice(0.5, 2)}, "slice of integers"), ({"queries": "x"}, "must be an integer")])
def test_bad_recorder_selections(kwargs, message):
    with pytest.raises(InterpError, match=message):
        Patterns(**kwargs)


def test_negative_layers_and_slices(tiny):
    batch = tiny.encode(["one two three four five six"])
    with interp.capture(tiny, patterns=Patterns(layers=[-1], queries=slice(None, None, 2))) as rec:
        tiny(**batch)
    assert rec.patterns[-1] is rec.patterns[2]
    assert rec.patterns[-1].shape[2] == (batch["input_ids"].shape[1] + 1) // 2
    with pytest.raises(InterpError, match="no row"), interp.capture(
            tiny, patterns=Patterns(queries=slice(50, 60))):
        tiny(**batch)


def test_ablate_fractional_head(tiny):
    with pytest.raises(InterpError, match="must be an integer"), ablate(tiny, [(1, 1.7)]):
        pass
