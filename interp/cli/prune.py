"""Retrieval heads vs random heads, ablated: NIAH accuracy and held-out perplexity.

Scans the model's retrieval heads on needle-in-a-haystack trials (Wu et al. 2024; or reads a score
file with --scores), then ablates the top-K heads and K random non-retrieval heads (--random-draws
times) and measures NIAH accuracy on fresh trials and perplexity on held-out text.

    interp prune smollm2 --top-k 5,10,20 --random-draws 3 --seed 0 --out runs/prune

Writes to --out: retrieval_heads.json (official {"layer-head": [scores]} format),
retrieval_heads.html (layer x head heatmap), scan_trials.jsonl (finished scan trials: an interrupted
run resumes from them), prune.json, prune.md (the table) and prune.html (the plot).
"""

import argparse
import json
import time
from pathlib import Path

from interp.cli import add_device_map_arguments, device_map_kwargs


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model", nargs="?", default="smollm2", help="model reference (default: the embedded SmolLM2)"
    )
    p.add_argument(
        "--top-k", type=_ints, default=[5, 10, 20], help="K values, comma-separated (default 5,10,20)"
    )
    p.add_argument("--random-draws", type=int, default=3, help="random head sets per K (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/prune", help="output folder (default runs/prune)")
    p.add_argument("--scores", help="an existing retrieval score file (official JSON format): skip the scan")
    p.add_argument("--lengths", type=_ints, default=[300, 500], help="scan context lengths (tokens)")
    p.add_argument("--depths", type=_floats, default=[0.1, 0.35, 0.6, 0.85], help="scan needle depths")
    p.add_argument("--eval-lengths", type=_ints, default=[300], help="pruning-trial context lengths")
    p.add_argument("--eval-depths", type=_floats, default=[0.2, 0.5, 0.8], help="pruning-trial needle depths")
    p.add_argument("--needles", type=int, default=0, help="use the first N built-in needles (0: all)")
    p.add_argument("--haystack", help="haystack text file (default: the shipped Pride and Prejudice excerpt)")
    p.add_argument(
        "--mode", choices=["uniform", "zero", "mean"], default="uniform", help="ablation (default uniform)"
    )
    p.add_argument("--phase", choices=["both", "prefill", "decode"], default="both")
    p.add_argument("--threshold", type=float, default=0.1, help="score over which a head is a retrieval head")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--ppl-windows", type=int, default=8, help="held-out windows for perplexity")
    p.add_argument("--ppl-window", type=int, default=256, help="tokens per held-out window")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="reuse scan trials finished in --out (default); --no-resume starts the scan over")
    add_device_map_arguments(p)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    import torch

    # lazy: start-up
    import interp
    from interp.analyze.prune import PruneConfig, check_top_k, heldout_windows, prune_experiment
    from interp.analyze.retrieval import RetrievalScores, retrieval_scores
    from interp.intervene.ablate import mean_z
    from interp.parallel import is_main
    from interp.tasks.niah import (
        DEFAULT_HAYSTACK,
        HELDOUT_TEXT,
        NEEDLES,
        NiahConfig,
        build_trials,
        read_haystack,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    progress = not args.no_progress
    haystack = Path(args.haystack) if args.haystack else DEFAULT_HAYSTACK
    read_haystack(haystack)  # a missing file fails here, before the model loads
    m = interp.load(args.model, **device_map_kwargs(args))
    n_layers, n_heads = m.adapter.n_layers(), m.adapter.n_heads
    check_top_k(args.top_k, n_layers * n_heads)
    needles = NEEDLES[: args.needles] if args.needles else NEEDLES
    out.mkdir(parents=True, exist_ok=True)

    if args.scores:
        scores = RetrievalScores.from_json(args.scores, n_layers=n_layers, n_heads=n_heads, model=m.name)
    else:
        checkpoint = out / "scan_trials.jsonl"
        if not args.resume and checkpoint.exists() and is_main():
            checkpoint.unlink()
        trials = build_trials(
            m.tokenizer,
            NiahConfig(lengths=args.lengths, depths=args.depths, needles=needles, haystack=haystack),
            n_ctx=m.adapter.n_ctx,
        )
        t0 = time.perf_counter()
        scores = retrieval_scores(
            m,
            trials,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            checkpoint=checkpoint,
            progress=progress,
        )
        print(
            f"scan: {scores.n_trials} trials, {len(scores.trial_ids)} recalled ({scores.success_rate:.0%}) "
            f"in {time.perf_counter() - t0:.0f} s (this run)"
        )
        if is_main():  # under torchrun rank 0 alone writes
            scores.save(out / "retrieval_heads.json")
            scores.figure().write_html(out / "retrieval_heads.html", include_plotlyjs=True)
    print(
        f"heads over 0.1: {scores.fraction_over(0.1):.1%}; top 10: "
        + ", ".join(f"{l}-{h} ({s:.2f})" for l, h, s in scores.top(10))
    )

    eval_trials = build_trials(
        m.tokenizer,
        NiahConfig(lengths=args.eval_lengths, depths=args.eval_depths, needles=needles, haystack=haystack),
        n_ctx=m.adapter.n_ctx,
    )
    heldout = heldout_windows(m.tokenizer, read_haystack(HELDOUT_TEXT), args.ppl_window, args.ppl_windows)
    config = PruneConfig(
        top_k=args.top_k,
        random_draws=args.random_draws,
        seed=args.seed,
        mode=args.mode,
        phase=args.phase,
        threshold=args.threshold,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        ppl_window=args.ppl_window,
        ppl_windows=args.ppl_windows,
    )
    means = None
    if args.mode == "mean":  # reference set: haystack windows, never the held-out text
        ref = heldout_windows(m.tokenizer, read_haystack(haystack), args.ppl_window, args.ppl_windows)
        means = mean_z(
            m, [{"input_ids": ref[i : i + args.batch_size]} for i in range(0, len(ref), args.batch_size)]
        )
    result = prune_experiment(m, scores, eval_trials, heldout, config, progress=progress, means=means)
    if is_main():
        result.save(out)
    print(result.table())
    print(json.dumps({"out": str(out), "files": sorted(p.name for p in out.iterdir())}))
    return 0
