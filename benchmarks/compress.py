"""Compressed vs uncompressed KV cache: KV bytes, peak RSS and decode tokens/s at long context.

    python benchmarks/compress.py                                   # SmolLM2, 2048/4096/8192, fraction 0.25
    python benchmarks/compress.py --lengths 8192 --fraction 0.25 --decode 32 --threads 1

Each (mode, length) runs in a fresh subprocess so its peak resident memory (`ru_maxrss`) is its
own. `full`: the plain model with transformers' DynamicCache. `compressed`: `interp.compress` with
a policy keeping `--fraction` of KV heads full (picked at random with `--seed`: the cost does not
depend on which heads) and `--sink` + `--window` for the rest. The prompt is a real-text prefill of
`length - decode` tokens, fed `--prefill-chunk` tokens per pass in both modes (0: one pass; only the
last position's logits are computed either way); decode runs `--decode` greedy steps, timed apart from
the prefill (tokens/s is wall-clock and process CPU time; with `--threads 1` the CPU figure is the fair
one on a shared machine).
"""

import argparse
import json
import resource
import subprocess
import sys
import time


def one(mode: str, length: int, fraction: float, sink: int, window: int, n_decode: int, threads: int,
        chunk: int) -> dict:
    import torch

    import interp
    from interp.intervene.compress import cache_bytes, prefill, select_kv_heads
    from interp.intervene.compress.heuristics import random_scores
    from interp.tasks.niah import HELDOUT_TEXT, read_haystack

    torch.set_num_threads(threads)
    m = interp.load()
    n_prompt = length - n_decode  # prompt + decoded tokens = length (SmolLM2's window is 8192)
    ids = m.tokenizer(read_haystack(HELDOUT_TEXT) * 4, add_special_tokens=False)["input_ids"][:n_prompt]
    ids = torch.tensor([ids])
    policy = select_kv_heads(m, random_scores(m.adapter.n_layers(), m.adapter.n_kv_heads, 0), fraction,
                             sink=sink, window=window)
    from contextlib import nullcontext

    with torch.no_grad(), (interp.compress(m, policy) if mode == "compressed" else nullcontext()):
        t0 = time.perf_counter()
        if chunk:
            logits, cache = prefill(m, ids, chunk=chunk)
        else:  # one pass over the whole prompt
            out = m.hf(input_ids=ids, use_cache=True, logits_to_keep=1)
            logits, cache = out.logits[:, -1], out.cache
            del out
        t1, c1 = time.perf_counter(), time.process_time()
        tok = logits.argmax(-1)[:, None]
        for _ in range(n_decode):
            out = m.hf(input_ids=tok, cache=cache, use_cache=True, logits_to_keep=1)
            cache, tok = out.cache, out.logits[:, -1:].argmax(-1)
        t2, c2 = time.perf_counter(), time.process_time()
    stored = cache_bytes(cache)
    return {"mode": mode, "length": length, "fraction": fraction if mode == "compressed" else 1.0,
            "prefill_chunk": chunk,
            "kv_bytes_stored": stored,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "prefill_s": t1 - t0,
            "decode_tok_s": n_decode / (t2 - t1), "decode_tok_s_cpu": n_decode / (c2 - c1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", default="2048,4096,8192")
    p.add_argument("--fraction", type=float, default=0.25)
    p.add_argument("--sink", type=int, default=4)
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--decode", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--prefill-chunk", type=int, default=512, help="tokens per prefill pass (0: one pass)")
    p.add_argument("--out", default="benchmarks/results/compress.json")
    p.add_argument("--one", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        mode, length = a.one.split(":")
        print(json.dumps(one(mode, int(length), a.fraction, a.sink, a.window, a.decode, a.threads,
                             a.prefill_chunk)))
        return
    rows = []
    for length in [int(x) for x in a.lengths.split(",")]:
        for mode in ("full", "compressed"):
            cmd = [sys.executable, __file__, "--one", f"{mode}:{length}", "--fraction", str(a.fraction),
                   "--sink", str(a.sink), "--window", str(a.window), "--decode", str(a.decode), "--threads",
                   str(a.threads), "--prefill-chunk", str(a.prefill_chunk)]
            res = subprocess.run(cmd, check=False, capture_output=True, text=True)
            if res.returncode:
                sys.exit(f"{mode} at {length} failed:\n{res.stderr[-2000:]}")
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    with open(a.out, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
