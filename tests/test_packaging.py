"""The wheel carries every module and the shipped data (a folder without `__init__.py` would be left out)."""

from pathlib import Path

import pytest
from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.fast
def test_every_source_folder_is_a_package():
    packaged = {ROOT.joinpath(*name.split("."))
                for name in find_packages(str(ROOT), include=["interp", "interp.*"])}
    folders = {p.parent for p in (ROOT / "interp").rglob("*.py") if "__pycache__" not in p.parts}
    missing = sorted(folders - packaged)
    assert not missing, f"folders the wheel would leave out (add __init__.py): {missing}"


@pytest.mark.fast
def test_shipped_data_is_found_where_the_package_looks():
    from interp.resources import data_path

    for part in [("fewshot", "sst2", "stsa.binary.train"), ("fewshot", "agnews", "test.csv"),
                 ("fewshot", "trec", "train.txt"), ("text", "pg1342-pride-and-prejudice.txt"),
                 ("haystack", "pride-and-prejudice.txt"), ("binding_organism", "model.safetensors"),
                 ("README.md",)]:
        assert data_path(*part).is_file(), part
