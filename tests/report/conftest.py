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


SMOLLM2_SMALL = {"heads": {"n_random": 4}, "sinks": {"n_prompts": 8},
                 "retrieval": {"n_needles": 2, "depths": [0.5]}}
CALIBRATED_HEADS = [(13, 5), (13, 0)]  # the SST-2 heads of the README's calibration table


@pytest.fixture(scope="session")
def smollm2_scans(smollm2, tmp_path_factory):
    """SmolLM2 scanned twice (heads, sinks, retrieval; small settings): plain and ACT-calibrated on 13:5,
    13:0."""
    from interp import Calibration
    from interp.scan import run_scan

    root = tmp_path_factory.mktemp("smollm2-scans")
    cal = Calibration(CALIBRATED_HEADS, beta=0.4, tau=0.1).save(root / "calibration.json")
    kw = {"analyses": "heads,sinks,retrieval", "config": SMOLLM2_SMALL, "progress": False}
    plain = run_scan(smollm2, out=root / "plain", **kw)
    calibrated = run_scan(smollm2, out=root / "calibrated", calibration=cal, **kw)
    return {"plain": plain, "calibrated": calibrated, "root": root}
