import json
import os

import pytest

from interp.scan.store import Parts, ScanFileError, atomic_write_json, atomic_write_text, read_json


@pytest.mark.fast
def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "scan.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": [1.5, 2]})
    assert json.loads(path.read_text()) == {"a": [1.5, 2]}
    assert sorted(os.listdir(tmp_path)) == ["scan.json"]


@pytest.mark.fast
def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "scan.json"
    atomic_write_json(path, {"old": True})
    with pytest.raises(ValueError):  # NaN is refused before anything is renamed
        atomic_write_json(path, {"x": float("nan")})
    assert read_json(path) == {"old": True}
    with pytest.raises(ScanFileError, match="cannot write"):
        atomic_write_text(tmp_path / "missing-dir" / "f.json", "{}")


@pytest.mark.fast
def test_read_json_names_the_corrupt_file(tmp_path):
    path = tmp_path / "scan.json"
    path.write_text('{"schema": "interp.scan", "trunc')
    with pytest.raises(ScanFileError, match="corrupt"):
        read_json(path, "scan file")
    assert path.read_text() == '{"schema": "interp.scan", "trunc'  # left untouched


@pytest.mark.fast
def test_parts_cache_finished_units(tmp_path):
    calls = []
    parts = Parts(tmp_path, "heads")
    first = parts.cached("random-0", lambda: calls.append(1) or {"v": 0.1 + 0.2})
    again = Parts(tmp_path, "heads").cached("random-0", lambda: calls.append(1) or {"v": -1})
    assert first == again == {"v": 0.1 + 0.2} and calls == [1]
    assert parts.done() == ["random-0"]
