import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from interp.errors import InterpError
from interp.parallel import map_batches

HERE = Path(__file__).parent


@pytest.mark.fast
def test_single_process_map_keeps_order_and_rejects_bad_batch():
    assert map_batches(lambda b: sum(b), list(range(7)), batch_size=3, progress=False) == [3, 12, 6]
    with pytest.raises(InterpError, match="batch_size"):
        map_batches(len, [1], batch_size=0)


@pytest.mark.fast
def test_torchrun_two_processes_match_single_process(tmp_path):
    sys.path.insert(0, str(HERE))
    import parallel_job

    alone = parallel_job.run()
    out = tmp_path / "dist.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(HERE / "parallel_job.py"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dist = torch.load(out, weights_only=False)
    assert dist["world"] == 2 and len(dist["result"]) == len(alone) == 3
    for a, b in zip(alone, dist["result"]):
        for layer in a:
            (ra, ca), (rb, cb) = a[layer], b[layer]
            for name in ("lse", "entropy", "argmax", "topk_index", "topk_prob", "n_visible"):
                assert torch.equal(getattr(ra, name), getattr(rb, name)), name
            assert torch.equal(ca.total, cb.total) and torch.equal(ca.count, cb.count)
