"""`interp saliency MODEL --input ...`: attention vs saliency agreement tables and figures.

    interp saliency smollm2 --input "The capital of France is" --input "Water boils at" --method occlusion
    interp saliency whisper-tiny.en --input data/speech/meeting.wav --method input_x_gradient --out runs/sal

An input ending in `.wav` is audio (speech models), anything else a text prompt. Several `--input`
are pooled: every generated token of every input is one row of the agreement statistics; under
torchrun the inputs are dealt to the ranks and rank 0 writes what one process writes.
Writes `<out>/agreement.json` (tables with bootstrap CIs, per-input details), `<out>/reports.pt`
(the raw maps, `SaliencyReport(**d)` for each dict), `<out>/heads.html`
(agreement by layer x head) and `<out>/token.html` (attention vs saliency for one token), and
prints the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from interp.errors import InterpError

# `interp.analyze.saliency.METHODS`, named here so that `--help` loads no torch (a test keeps them equal)
METHOD_NAMES = ("input_x_gradient", "integrated_gradients", "occlusion")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("model", help="model reference for interp.load (e.g. smollm2, whisper-tiny.en)")
    parser.add_argument(
        "--input",
        action="append",
        required=True,
        help="a text prompt or a .wav file; repeat to pool several inputs",
    )
    parser.add_argument(
        "--method",
        default="input_x_gradient",
        choices=METHOD_NAMES,
        help="saliency method (default: input_x_gradient)",
    )
    parser.add_argument(
        "--score",
        default="logprob",
        choices=["logprob", "logit", "prob"],
        help="what saliency explains: the generated token's log-prob (default), logit or prob",
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=None, help="tokens to generate (8 text / 64 speech)"
    )
    parser.add_argument("--n-steps", type=int, default=32, help="integrated gradients steps (default 32)")
    parser.add_argument(
        "--internal-batch-size", type=int, default=8, help="rows per forward pass (default 8)"
    )
    parser.add_argument(
        "--window",
        type=int,
        nargs="+",
        default=None,
        help="occlusion window: tokens for text, MEL FRAMES for speech (default 1 / 16 10)",
    )
    parser.add_argument("--chat", action="store_true", help="wrap text prompts in the chat template")
    parser.add_argument("--k", type=int, default=5, help="top-k overlap size (default 5)")
    parser.add_argument(
        "--region",
        type=float,
        default=0.5,
        help="attention mass of the top region for saliency coverage (default 0.5)",
    )
    parser.add_argument(
        "--drop-first",
        type=int,
        default=0,
        help="leave out the first N input positions (an attention sink) and renormalise",
    )
    parser.add_argument("--per-head", action="store_true", help="also tabulate every single head")
    parser.add_argument("--out", type=Path, default=Path("saliency-out"), help="output directory")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    return parser


def _load(name: str):
    from interp.models.load import load  # lazy: start-up (`interp --help` needs no model code)

    return load(name)  # "whisper-tiny.en" is one of load's embedded models


def explain(args: argparse.Namespace, model=None) -> dict:
    """Explain every input, pool the agreement, write JSON + figures; return the JSON document.

    `model` (an already loaded `interp.Model`) skips loading `args.model`.
    """
    import torch  # lazy: start-up (`interp saliency --help` loads none of this)

    from interp.analyze.agreement import pooled_head_grid, pooled_table
    from interp.analyze.saliency import METHODS, SaliencyConfig
    from interp.analyze.saliency_inputs import explain_inputs
    from interp.parallel import is_main

    if args.method not in METHODS:
        raise InterpError(f"Unknown saliency method {args.method!r}; choose one of {', '.join(METHODS)}.")
    cfg = SaliencyConfig(
        method=args.method,
        score=args.score,
        n_steps=args.n_steps,
        internal_batch_size=args.internal_batch_size,
        window=tuple(args.window) if args.window else None,
        show_progress=args.progress,
    )
    m = model if model is not None else _load(args.model)
    reports = explain_inputs(m, args.input, max_new_tokens=args.max_new_tokens, config=cfg, chat=args.chat,
                             progress=args.progress)
    if args.drop_first:
        reports = [r.drop_first(args.drop_first) for r in reports]
    table = pooled_table(reports, per_head=args.per_head, k=args.k, region=args.region)
    doc = {
        "model": args.model,
        "method": args.method,
        "score": args.score,
        "stack": reports[0].stack,
        "drop_first": args.drop_first,
        "n_tokens": sum(len(r.tokens) for r in reports),
        "inputs": args.input,
        "agreement": {name: a.to_json() for name, a in table.items()},
        "pearson_by_head": pooled_head_grid(reports).tolist(),
        "per_input": [r.to_json(k=args.k, region=args.region) for r in reports],
    }
    if not is_main():  # under torchrun rank 0 alone writes and prints
        return doc
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "agreement.json").write_text(json.dumps(doc, indent=1))
    torch.save([vars(r) for r in reports], args.out / "reports.pt")  # SaliencyReport(**d) rebuilds one
    heads = reports[0].figure_heads()
    heads.data[0].z = doc["pearson_by_head"]
    heads.write_html(args.out / "heads.html", include_plotlyjs=True)
    reports[0].figure_token(0).write_html(args.out / "token.html", include_plotlyjs=True)
    _print(doc, table)
    return doc


def _print(doc: dict, table) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(
        title=f"{doc['model']}: {doc['stack']} attention vs {doc['method']} saliency "
        f"({doc['n_tokens']} generated tokens; mean [95% CI])"
    )
    for col in (
        "attention",
        "Pearson",
        "Spearman",
        "top-k overlap (chance)",
        "saliency coverage (region size)",
    ):
        t.add_column(col)
    for name, a in table.items():
        t.add_row(
            name,
            str(a.pearson),
            str(a.spearman),
            f"{a.topk} ({a.topk_chance.mean:.2f})",
            f"{a.coverage} ({a.region_size.mean:.2f})",
        )
    Console().print(t)


def run(args: argparse.Namespace) -> int:
    """Entry point for `interp saliency`."""
    explain(args)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(
        argparse.ArgumentParser(
            prog="interp saliency", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
    )
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
