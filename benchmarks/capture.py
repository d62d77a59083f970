"""Wall time and peak memory of capturing every head's attention, interp vs peers (not a test).

CPU mode (default) runs SmolLM2-135M on one prompt of N tokens per method, each measurement in
its own subprocesses (`--processes`, default 2) so peak memory is per method, after a 32-token warm-up
run of the same method (time: the fastest of `--repeats` runs per process, default 3; memory: the
peak over all of them above the resident size after the warm-up):

| method   | what runs                                                                 |
|----------|---------------------------------------------------------------------------|
| sdpa     | the plain SDPA forward, nothing captured (the floor)                      |
| stats    | `interp` Stats recorder: all layers/heads, rows + columns + sink span mass |
| eager    | HF eager attention with `output_attentions=True`                          |
| tl       | TransformerLens `run_with_cache`, `hook_pattern` of every layer           |
| nnsight  | nnsight trace saving every layer's attention weights (eager)              |

A method whose patterns would not fit in `--ram-gb` is reported as such without running.

    python benchmarks/capture.py --sizes 1024 2048 4096 8192 --out out/bench
    python benchmarks/capture.py --gpu --sizes 4096 16384 32768 65536      # fused kernel vs SDPA

Writes `<out>.md` (a markdown table) and `<out>.html` (plotly chart).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

METHODS = ("sdpa", "stats", "eager", "tl", "nnsight")
PATTERN_METHODS = ("eager", "tl", "nnsight")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


class PeakRSS:
    """Samples this process's resident memory every few ms; `.extra` is the peak over the start."""

    def __enter__(self):
        self.start = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())
        self.extra = self.peak - self.start


def child(method: str, n: int, repeats: int = 1) -> dict:
    """Run one measurement in this process and return it."""
    import torch

    import interp
    from interp.capture.stats import Stats
    from interp.resources import data_path

    torch.manual_seed(0)
    backend = {"tl": "tl", "nnsight": "nnsight"}.get(method, "hf")
    m = interp.load("smollm2", backend=backend)
    text = data_path("text", "pg1342-pride-and-prejudice.txt").read_text()
    ids = m.tokenizer(text[: n * 8], return_tensors="pt")["input_ids"][:, :n]
    assert ids.shape[1] == n, f"text too short for {n} tokens"
    if method == "eager":
        m.hf.set_attn_implementation("eager")

    def run(ids=ids):
        with torch.no_grad():
            if method == "sdpa":
                m.hf(input_ids=ids)
            elif method == "stats":
                st = Stats(first_tokens=1)
                with interp.capture(m, probes=[st]):
                    m.hf(input_ids=ids)
                return st
            elif method == "eager":
                return m.hf(input_ids=ids, output_attentions=True).attentions
            elif method == "tl":
                return m.bridge.run_with_cache(ids,
                                               names_filter=lambda name: name.endswith("hook_pattern"))[1]
            elif method == "nnsight":
                m.hf.set_attn_implementation("eager")
                saved = []
                with m.nnsight.trace(ids):
                    for layer in m.nnsight.model.layers:
                        saved.append(layer.self_attn.output[1].save())
                return saved

    run(ids[:, :32])  # a 32-token warm-up: lazy imports and library init are no part of any method's cost
    times = []
    with PeakRSS() as mem:  # peak over all repeats; time = the fastest (page faults make single runs noisy)
        for _ in range(repeats):
            t0 = time.perf_counter()
            result = run()
            times.append(time.perf_counter() - t0)
            del result
    return {"method": method, "n": n, "seconds": min(times), "all_seconds": times,
            "extra_mib": mem.extra / 2**20}


def measure(method: str, n: int, timeout: float, repeats: int = 1, processes: int = 1) -> dict:
    """Run `child` in `processes` fresh processes: the fastest time and the largest memory over all of them.

    Wall times on this machine vary ~10% between processes running the same code (memory layout,
    page faults), more than between repeats within one, so a second process guards against one slow draw.
    """
    runs = []
    for _ in range(processes):
        cmd = [sys.executable, __file__, "--child", method, str(n), "--repeats", str(repeats)]
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        except subprocess.TimeoutExpired:
            return {"method": method, "n": n, "status": f"timeout > {timeout:.0f} s"}
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode or not lines:
            tail = (proc.stderr.strip().splitlines() or ["?"])[-1][:120]
            return {"method": method, "n": n, "status": f"failed: {tail}"}
        runs.append(json.loads(lines[-1]))
    best = min(runs, key=lambda r: r["seconds"])
    return {**best, "all_seconds": [r["all_seconds"] for r in runs],
            "extra_mib": max(r["extra_mib"] for r in runs)}


def pattern_gb(n: int) -> float:
    return 30 * 9 * n * n * 4 / 1e9  # SmolLM2: 30 layers x 9 heads, fp32


def table(results: list[dict]) -> str:
    sizes = sorted({r["n"] for r in results})
    methods = [m for m in METHODS if any(r["method"] == m for r in results)]
    cell = {(r["method"], r["n"]): r for r in results}
    head = "| N tokens | " + " | ".join(methods) + " |\n|---|" + "---|" * len(methods) + "\n"
    rows = []
    for n in sizes:
        cells = []
        for m in methods:
            r = cell.get((m, n))
            if r is None:
                cells.append("—")
            elif "status" in r:
                cells.append(r["status"])
            else:
                cells.append(f"{r['seconds']:.1f} s, +{r['extra_mib']:.0f} MiB")
        rows.append(f"| {n} | " + " | ".join(cells) + " |")
    return head + "\n".join(rows) + "\n"


def figure(results: list[dict], path: Path) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("wall time (s)", "extra peak memory (MiB)"))
    for m in METHODS:
        ok = sorted((r for r in results if r["method"] == m and "status" not in r), key=lambda r: r["n"])
        if ok:
            xs = [r["n"] for r in ok]
            fig.add_trace(go.Scatter(x=xs, y=[r["seconds"] for r in ok], name=m, legendgroup=m), 1, 1)
            fig.add_trace(go.Scatter(x=xs, y=[r["extra_mib"] for r in ok], name=m, legendgroup=m,
                                     showlegend=False), 1, 2)
    fig.update_xaxes(type="log", title="N tokens")
    fig.update_layout(title="Capturing all heads' attention on SmolLM2-135M (CPU)")
    fig.write_html(path, include_plotlyjs=True)


def gpu_table(sizes: list[int]) -> str:
    """Per attention layer, bf16, batch 1: torch SDPA vs the fused kernel (output + row stats, + columns).

    Llama-3.2-1B-like (32 heads, 8 kv heads, d_head 64) and Llama-3-8B-like (32 / 8 / 128) shapes with
    random inputs: attention cost depends only on these shapes, not on the weights.
    """
    import torch
    import torch.nn.functional as F

    from interp.kernels.triton_stats import fused_stats

    def timed(fn, reps=5):
        fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / reps

    lines = ["| config | N | SDPA ms | fused rows ms | ratio | fused rows+cols ms |",
             "|---|---|---|---|---|---|"]
    for name, h, kv, d in (("1B-like", 32, 8, 64), ("8B-like", 32, 8, 128)):
        for n in sizes:
            q = torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16)
            k, v = (torch.randn(1, kv, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(2))
            sdpa = timed(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(
                q, k, v, is_causal=True, enable_gqa=True))
            rows = timed(lambda q=q, k=k, v=v, d=d: fused_stats(q, k, v, None, scaling=d**-0.5,
                                                                is_causal=True, spans=[(0, 4)]))
            both = timed(lambda q=q, k=k, v=v, d=d: fused_stats(q, k, v, None, scaling=d**-0.5,
                                                                is_causal=True, spans=[(0, 4)],
                                             columns=True))
            lines.append(f"| {name} | {n} | {sdpa * 1e3:.2f} | {rows * 1e3:.2f} | {sdpa / rows:.2f}x | "
                         f"{both * 1e3:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--ram-gb", type=float, default=12.0, help="skip pattern methods needing more than this")
    p.add_argument("--timeout", type=float, default=240.0, help="seconds per measurement")
    p.add_argument("--repeats", type=int, default=3, help="runs per process: the fastest is reported")
    p.add_argument("--processes", type=int, default=2, help="fresh processes per measurement (fastest time, "
                   "largest memory)")
    p.add_argument("--out", default="out/bench_capture")
    p.add_argument("--gpu", action="store_true",
                   help="fused Triton kernel vs torch SDPA on random Llama configs")
    p.add_argument("--child", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.repeats)), flush=True)
        return
    if args.gpu:
        print(gpu_table(args.sizes))
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    for n in args.sizes:
        for method in args.methods:
            if method in PATTERN_METHODS and 1.5 * pattern_gb(n) > args.ram_gb:
                results.append({"method": method, "n": n,
                                "status": f"not run: needs ~{pattern_gb(n):.0f} GB"})
            else:
                results.append(measure(method, n, args.timeout, args.repeats, args.processes))
            print(json.dumps(results[-1]), flush=True)
            out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    md = table(results)
    out.with_suffix(".md").write_text(md)
    figure(results, out.with_suffix(".html"))
    print(md)


if __name__ == "__main__":
    main()
