"""Retrieval scan: 1 rank x 2 threads vs 2 torchrun ranks x 1 thread (work units per second per rank).

    python benchmarks/parallel.py [--lengths 300] [--depths 0.2,0.5,0.8] [--needles 2] [--batch-size 2]

Runs `retrieval_scores` on SmolLM2-135M twice (same trials, same batches) and prints the wall time
of the scan alone (model loading excluded), the batches per second, and the machine's load average.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def job(args) -> None:
    import torch

    import interp
    from interp.analyze.retrieval import retrieval_scores
    from interp.parallel import init, is_main
    from interp.tasks.niah import NEEDLES, NiahConfig, build_trials

    rank, world = init()
    torch.set_num_threads(args.threads)
    m = interp.load("smollm2")
    trials = build_trials(m.tokenizer, NiahConfig(lengths=args.lengths, depths=args.depths,
                                                  needles=NEEDLES[: args.needles]), n_ctx=m.adapter.n_ctx)
    if world > 1:
        torch.distributed.barrier()
    start = time.perf_counter()
    scores = retrieval_scores(m, trials, batch_size=args.batch_size, max_new_tokens=8, progress=False)
    wall = time.perf_counter() - start
    if is_main():
        units = -(-len(trials) // args.batch_size)
        print(json.dumps({"ranks": world, "threads": args.threads, "trials": len(trials), "units": units,
                          "wall_s": round(wall, 2), "units_per_s_per_rank": round(units / wall / world, 4),
                          "mean": scores.mean.sum().item()}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", type=lambda s: [int(x) for x in s.split(",")], default=[300])
    p.add_argument("--depths", type=lambda s: [float(x) for x in s.split(",")], default=[0.2, 0.5, 0.8])
    p.add_argument("--needles", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.threads:
        return job(a)
    rest = ["--lengths", ",".join(map(str, a.lengths)), "--depths", ",".join(map(str, a.depths)),
            "--needles", str(a.needles), "--batch-size", str(a.batch_size)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    print(f"load average before: {os.getloadavg()}")
    subprocess.run([sys.executable, __file__, *rest, "--threads", "2"], env={**env, "OMP_NUM_THREADS": "2"},
                   check=True)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                    "127.0.0.1", "--master-port", str(port), __file__, *rest, "--threads", "1"],
                   env={**env, "OMP_NUM_THREADS": "1"}, check=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
