import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scan"))
from tiny_scan import SMALL, save_tiny


@pytest.fixture(scope="session")
def tiny_scan_dir(tmp_path_factory):
    """A finished scan (heads) of a tiny random model: scan.json + report.html."""
    from interp.scan import run_scan

    model = save_tiny(tmp_path_factory.mktemp("tiny-llama"))
    out = tmp_path_factory.mktemp("scan")
    run_scan(str(model), analyses="heads", out=out, overwrite=True, config=SMALL, progress=False)
    return out
