"""Head-level KV-cache compression: which heads keep a full cache, and what it costs.

Scores heads four ways (retrieval score, DuoAttention gates, sink mass, random draws), keeps the
top fraction of KV heads full and streams the rest (`--sink` first tokens + `--window` recent),
then measures NIAH accuracy, held-out perplexity, KV bytes and decode speed per method x fraction
x context length. Needles that score heads and needles that evaluate them are disjoint (the first
half of the built-in needles score, the second half evaluate). Fraction 1 is the uncompressed
model (token-identical to a full-fraction policy), measured once per length.

    interp compress smollm2 --select retrieval,duo,sink,random --fractions 0.1,0.25,0.5,0.75,1 \\
        --sink 4 --window 256 --lengths 1024,2048,4096 --out runs/compress

Writes to --out: scores/*.json (per-KV-head scores), policies/*.tsv (DuoAttention layout),
parts/cells/*.json (finished cells: an interrupted run resumes from them), compress.json and
compress.html (accuracy vs KV memory, Pareto plot).
"""

import argparse
import json
from pathlib import Path

from interp.cli.prune import _floats, _ints

METHODS = ("retrieval", "duo", "sink", "random")


def _methods(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [n for n in names if n not in METHODS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown selection method(s) {bad}; choose from "
                                         f"{', '.join(METHODS)}")
    return names


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default="smollm2",
                   help="model reference (default: the embedded SmolLM2)")
    p.add_argument("--select", type=_methods, default=list(METHODS), help="methods, comma-separated")
    p.add_argument("--fractions", type=_floats, default=[0.1, 0.25, 0.5, 0.75, 1.0],
                   help="full-head fractions")
    p.add_argument("--sink", type=int, default=4)
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--lengths", type=_ints, default=[1024, 2048, 4096], help="evaluation context lengths")
    p.add_argument("--depths", type=_floats, default=[0.2, 0.5, 0.8], help="evaluation needle depths")
    p.add_argument("--random-draws", type=int, default=3)
    p.add_argument("--score-lengths", type=_ints, default=[512], help="retrieval-scan context lengths")
    p.add_argument("--duo-steps", type=int, default=100,
                   help="DuoAttention gate training steps (~5 s each on CPU)")
    p.add_argument("--duo-length", type=int, default=512)
    p.add_argument("--duo-window", type=int, default=64, help="streaming window while training gates")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--ppl-windows", type=int, default=1,
                   help="held-out windows (of each length) for perplexity")
    p.add_argument("--prefill-chunk", type=int, default=512,
                   help="tokens per prefill pass (bounds the attention masks; results do not depend on it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/compress")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    # lazy: start-up (`interp --help` and the other commands load none of this)
    import torch

    import interp
    from interp.cli.compress_run import Experiment
    from interp.intervene.compress.policy import check_streaming
    from interp.intervene.compress.select import check_fraction
    from interp.report.compress import write_page

    if args.threads:
        torch.set_num_threads(args.threads)
    for f in args.fractions:
        check_fraction(f)
    check_streaming(args.sink, args.window)
    if args.prefill_chunk < 1:
        raise interp.InterpError(f"--prefill-chunk must be >= 1 token, got {args.prefill_chunk}.")
    if args.random_draws < 1:
        raise interp.InterpError(f"--random-draws must be >= 1, got {args.random_draws}.")
    m = interp.load(args.model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    exp = Experiment(m, out, args, progress=not args.no_progress)

    def save(doc: dict) -> None:
        (out / "compress.json").write_text(json.dumps(doc, indent=1))
        write_page(doc, out / "compress.html")

    exp.on_cell = save
    doc = exp.run()
    save(doc)
    print(exp.table(doc))
    print(exp.pivot(doc))
    print(json.dumps({"out": str(out), "files": ["compress.json", "compress.html"]}))
    return 0
