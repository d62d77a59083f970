import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if not os.environ.get("CUDA_VISIBLE_DEVICES") and not Path("/dev/nvidia0").exists():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before triton's first import


@pytest.fixture(scope="session")
def smollm2():
    """The embedded SmolLM2-135M-Instruct (HF backend), loaded once per test session."""
    import interp

    return interp.load("smollm2")


@pytest.fixture(scope="session")
def data() -> Path:
    """The `data/` folder the package ships (haystacks, few-shot sets, sink passages, the organism)."""
    from interp.resources import data_root

    return data_root()


def _ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def pytest_collection_modifyitems(config, items):
    """Every test says how it runs (`fast` or `slow`); `gpu` tests leave the run where there is no GPU.

    A GPU test is deselected, not skipped, on a machine without CUDA: CI has no GPU by design.
    """
    unmarked = [item.nodeid for item in items if not {"fast", "slow"} & {m.name for m in item.iter_markers()}]
    if unmarked:
        raise pytest.UsageError(f"{len(unmarked)} tests are marked neither fast nor slow: "
                                f"{', '.join(unmarked)}")
    import torch

    if not torch.cuda.is_available():
        gpu = [item for item in items if item.get_closest_marker("gpu")]
        if gpu:
            config.hook.pytest_deselected(items=gpu)
            items[:] = [item for item in items if not item.get_closest_marker("gpu")]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """With `CI` set, a skip is a failure: a missing chromium, kaleido, triton, data file or model must not
    pass quietly on a clean machine."""
    report = yield
    if _ci() and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI (a skip is a failure in CI): {reason}"
    return report
