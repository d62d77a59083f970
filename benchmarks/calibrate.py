"""Overhead of ACT calibration on one forward pass vs the plain SDPA forward, and its peak memory.

    python benchmarks/calibrate.py                           # SmolLM2, 512 and 2048 tokens, 8 heads
    python benchmarks/calibrate.py --lengths 512 --heads 4:0,9:3 --repeats 3

Each (mode, length) runs in a fresh subprocess so its peak resident memory (`ru_maxrss`; on CUDA
`max_memory_allocated`) is its own. Modes: `sdpa` (no capture), `weights` (the engine recomputes
the calibrated heads' full weights, recorders see them) and `stream` (calibrated heads rewritten
a chunk of query rows at a time). Time is the best of `--repeats` forwards after a short warm-up,
as wall-clock and as process CPU time (with `--threads 1` the CPU time is the fair figure on a
shared machine).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

MODES = ("sdpa", "weights", "stream")
DEFAULT_HEADS = "4:0,6:2,9:3,12:1,15:5,18:7,21:4,24:8"  # 8 heads spread over the depth, as a search returns


def one(model_ref: str, mode: str, length: int, heads: str, repeats: int, device: str, threads: int) -> dict:
    import torch

    import interp
    from interp.intervene.calibrate import calibrate, parse_heads

    torch.set_num_threads(threads)
    m = interp.load(model_ref, device=device)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, m.hf.config.vocab_size - 1, (1, length), generator=g).to(m.device)
    cuda = device.startswith("cuda")

    def forward(x):
        with torch.no_grad():
            if mode == "sdpa":
                m.hf(input_ids=x)
            else:
                with calibrate(m, parse_heads(heads), stream=mode == "stream"):
                    m.hf(input_ids=x)
        if cuda:
            torch.cuda.synchronize()

    forward(ids[:, :8])  # fault the weights in, so the peak below is the forward's own memory
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        forward(ids)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    peak = (torch.cuda.max_memory_allocated() - base if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss)
    return {"mode": mode, "length": length, "wall_s": min(wall), "cpu_s": min(cpu), "peak_extra_bytes": peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--lengths", default="512,2048")
    p.add_argument("--heads", default=DEFAULT_HEADS)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1: CPU time is comparable on a busy host)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/bench-calibrate.json")
    p.add_argument("--one", nargs=2, metavar=("MODE", "LENGTH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.model, args.one[0], int(args.one[1]), args.heads, args.repeats, args.device,
                             args.threads)))
        return
    rows = []
    for length in (int(x) for x in args.lengths.split(",")):
        for mode in MODES:
            cmd = [sys.executable, __file__, "--one", mode, str(length), "--model", args.model, "--heads",
                   args.heads, "--repeats", str(args.repeats), "--device", args.device, "--threads",
                   str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            out = proc.stdout.strip().splitlines()[-1]
            rows.append(json.loads(out))
            print(rows[-1], flush=True)
    base = {r["length"]: r for r in rows if r["mode"] == "sdpa"}
    print("\n| tokens | mode | CPU s | x SDPA (CPU) | wall s | x SDPA (wall) | peak memory above the loaded "
          "model (MB) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        b = base[r["length"]]
        r["overhead_cpu"], r["overhead_wall"] = r["cpu_s"] / b["cpu_s"], r["wall_s"] / b["wall_s"]
        print(f"| {r['length']} | {r['mode']} | {r['cpu_s']:.2f} | {r['overhead_cpu']:.2f} | "
              f"{r['wall_s']:.2f} | {r['overhead_wall']:.2f} | {r['peak_extra_bytes'] / 1e6:.0f} |")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"heads": args.heads, "device": args.device, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
