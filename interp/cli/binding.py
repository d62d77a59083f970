"""Positional, lexical and reflexive binding mechanisms: patching sweep, shares and the mixing model.

    interp binding smollm2 --task boxes --groups 3,5,10 --layers auto
    interp binding organism --groups 5,8,10 --pairs 400
    python -m interp.cli.binding organism --task boxes --groups 5,8,10 --out runs/binding

`MODEL` is anything `interp.load` accepts, or `organism` for the shipped binding model organism.
`--search` first measures plain accuracy for every template and format and analyses the best one.
`--pairs N` counterfactuals per n (default 400: every share's 95% interval within +-0.05).
Writes `binding.json` (with the command that made it) and the plotly figures (`*.html`) to
`--out`, prints the tables. Under torchrun the accuracy batches and the batches of pairs
(`--batch-size` each) are dealt to the ranks; rank 0 writes what one process writes.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from interp.errors import InterpError
from interp.tasks.binding_templates import FORMATS, TEMPLATES


def _groups(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(g) for g in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--groups wants comma-separated integers like 3,5,10, not {text!r}") from None


def _layers(text: str):
    if text == "auto":
        return "auto"
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--layers wants 'auto' or comma-separated layer indices, not {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("model", help="a model for interp.load (e.g. smollm2, a local dir) or 'organism'")
    parser.add_argument("--task", default="boxes", choices=list(TEMPLATES), help="binding template")
    parser.add_argument("--format", default="auto", choices=["auto", *FORMATS],
                        help="prompt format; auto = chat if the tokenizer has a chat template")
    parser.add_argument("--groups", type=_groups, default=(3, 5, 10),
                        help="numbers of entity groups, e.g. 3,5,10")
    parser.add_argument("--layers", type=_layers, default="auto", help="'auto' (sweep all) or e.g. 18,20,22")
    parser.add_argument("--pairs", type=int, default=400,
                        help="counterfactual pairs per n (400: every share's 95%% interval within +-0.05)")
    parser.add_argument("--per-position", type=int, default=None,
                        help="counterfactuals per positional group (overrides --pairs with this x n)")
    parser.add_argument("--accuracy-per-position", type=int, default=10, help="prompts per queried group")
    parser.add_argument("--search", action="store_true", help="try every template x format, analyse the best")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="prompts per forward (and per work unit under torchrun)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/binding"))
    parser.add_argument("--no-figures", action="store_true", help="write binding.json only")
    return parser


def _load(ref: str):
    # lazy: start-up (`interp --help` and other commands need none of this)
    import interp
    from interp.organisms.binding import DEFAULT_DIR, load_organism

    if ref == "organism":
        load_organism(DEFAULT_DIR)  # a clear error if the weights are missing
        ref = str(DEFAULT_DIR)
    return interp.load(ref)


def search(model, groups, per_position: int, seed: int, progress: bool = True, batch_size: int = 32) -> list:
    """Plain accuracy of every template x format (formats the tokenizer supports)."""
    # lazy: start-up (`interp --help` and other commands need none of this)
    from interp.tasks.binding import BindingTask, accuracy

    reports = []
    formats = [f for f in FORMATS if f == "plain" or getattr(model.tokenizer, "chat_template", None)]
    for template in TEMPLATES:
        for fmt in formats:
            task = BindingTask(template, model.tokenizer, format=fmt)
            usable = [n for n in groups if n <= task.max_groups]
            reports.append(accuracy(model.hf, model.tokenizer, task, usable, per_position=per_position,
                                    seed=seed, batch_size=batch_size, progress=progress))
    return reports


def command(args: argparse.Namespace) -> str:
    """The `interp binding ...` command line that reproduces `args` (stored in binding.json)."""
    def fmt(v):
        return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)

    parts = ["interp", "binding", args.model, "--task", args.task, "--format", args.format,
             "--groups", fmt(args.groups), "--layers", fmt(args.layers)]
    parts += ["--per-position", str(args.per_position)] if args.per_position else ["--pairs", str(args.pairs)]
    parts += ["--accuracy-per-position", str(args.accuracy_per_position), "--seed", str(args.seed)]
    parts += ["--batch-size", str(args.batch_size)] * (args.batch_size != 32)
    parts += ["--search"] * args.search + ["--out", str(args.out)] + ["--no-figures"] * args.no_figures
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    """Entry point for `interp binding`."""
    # lazy: start-up (`interp --help` and other commands need none of this)
    from interp.analyze.binding import BindingConfig, analyze_binding
    from interp.analyze.binding import figures as _figures  # noqa: F401  (loaded up front, like the rest)
    from interp.parallel import is_main

    if args.batch_size < 1:
        raise InterpError(f"--batch-size must be >= 1, got {args.batch_size}.")
    model = _load(args.model)
    fmt = args.format
    if fmt == "auto":
        fmt = "chat" if getattr(model.tokenizer, "chat_template", None) else "plain"
    if is_main():  # under torchrun rank 0 alone writes
        args.out.mkdir(parents=True, exist_ok=True)
    task = args.task
    found = []
    if args.search:
        found = search(model, args.groups, args.accuracy_per_position, args.seed, progress=is_main(),
                       batch_size=args.batch_size)
        for rep in found:
            print(f"\n{rep.template} / {rep.format}: mean accuracy "
                  f"{sum(rep.by_n.values()) / len(rep.by_n):.2f}")
            print(rep.table())
        best = max(found, key=lambda r: sum(r.by_n.values()) / len(r.by_n))
        task, fmt = best.template, best.format
        print(f"\nbest: {task} / {fmt}")
    config = BindingConfig(template=task, format=fmt, groups=args.groups, layers=args.layers,
                           pairs=args.pairs, per_position=args.per_position,
                           accuracy_per_position=args.accuracy_per_position,
                           seed=args.seed, batch_size=args.batch_size)
    result = analyze_binding(model, model.tokenizer, config)
    if not is_main():
        return 0
    summary = result.to_json()
    summary["search"] = [r.to_json() for r in found]
    summary["model"] = args.model
    summary["command"] = command(args)
    (args.out / "binding.json").write_text(json.dumps(summary, indent=1))
    if not args.no_figures:
        for name, fig in result.figures().items():
            fig.write_html(args.out / f"binding_{name}.html", include_plotlyjs=True)
    print(result.report())
    print(f"\nwrote {args.out}/binding.json" + ("" if args.no_figures else " and binding_*.html"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="interp binding", description=__doc__.split("\n")[0]))
    args = parser.parse_args(argv)
    try:
        return run(args)
    except InterpError as err:
        parser.exit(2, f"interp binding: error: {err}\n")


if __name__ == "__main__":
    raise SystemExit(main())
