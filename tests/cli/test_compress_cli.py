"""`interp compress` end to end on a tiny saved Llama: files, resume, refused resume."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "scan"))
from tiny_scan import save_tiny  # noqa: E402

from interp.cli import main  # noqa: E402

pytestmark = pytest.mark.fast

ARGS = ["--select", "retrieval,sink,random", "--random-draws", "1", "--fractions", "0.5,1",
        "--lengths", "100",
        "--depths", "0.5", "--score-lengths", "100", "--max-new-tokens", "3", "--sink", "2", "--window", "16",
        "--prefill-chunk", "48", "--no-progress"]


def test_compress_writes_resumes_and_refuses_other_settings(tmp_path, capsys):
    model = str(save_tiny(tmp_path / "tiny"))
    out = tmp_path / "run"
    assert main(["compress", model, *ARGS, "--out", str(out)]) == 0
    doc = json.loads((out / "compress.json").read_text())
    names = sorted((c["method"], c["fraction"]) for c in doc["cells"])
    assert names == [("full", 1.0), ("random", 0.5), ("retrieval", 0.5), ("sink", 0.5)]
    assert all(len(c["recalled"]) == doc["n_eval_trials"] == 4 for c in doc["cells"])
    half = next(c for c in doc["cells"] if c["method"] == "retrieval")
    assert half["stored_bytes"] < next(c for c in doc["cells"] if c["method"] == "full")["stored_bytes"]
    assert (out / "compress.html").read_text().count("<tr>") == 1 + 4
    assert len(list((out / "policies").glob("*.tsv"))) == 3

    cell = out / "parts" / "cells" / "retrieval0-f0.5-L100.json"
    cell.write_text(cell.read_text().replace('"length": 100', '"length": 100, "resumed": true'))
    assert main(["compress", model, *ARGS, "--out", str(out)]) == 0  # finished cells are read, not rerun
    again = json.loads((out / "compress.json").read_text())
    assert next(c for c in again["cells"] if c["method"] == "retrieval").get("resumed") is True

    capsys.readouterr()  # other settings are refused before any work (the duo gates are not trained)
    assert main(["compress", model, *ARGS[:-5], "--window", "32", "--prefill-chunk", "48", "--no-progress",
                 "--select", "duo", "--duo-steps", "2", "--duo-length", "64", "--out", str(out)]) == 2
    assert "window=16" in capsys.readouterr().err
    assert not (out / "parts" / "scores" / "duo.json").exists()
