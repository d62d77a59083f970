"""The `interp` command line: one subcommand per module, registered by name.

Each subcommand module `interp/cli/NAME.py` defines `add_arguments(parser)` and `run(args) -> int`;
`COMMANDS` lists the names. `interp --help` reads the modules' docstrings without importing them, and
`interp NAME ...` imports only `interp.cli.NAME`, which imports torch and the analyzers inside `run`.

    interp info [MODEL]            model summary and a captured-attention summary
    interp scan [MODEL]            all analyzers -> scan.json + report.html
    interp compare A B             two scans of one architecture -> per-head differences
    interp prune MODEL             retrieval heads vs random heads, ablated
    interp calibrate MODEL         ACT-style attention calibration on few-shot tasks
    interp binding MODEL           positional / lexical / reflexive binding mechanisms
    interp saliency MODEL          attention vs gradient saliency agreement
    interp compress MODEL          head-level KV-cache compression: selection methods compared
"""

import argparse
import ast
import contextlib
import importlib
import importlib.util
import os
import sys

from interp.errors import InterpError, check_out_dir

# The subcommands, in `--help` order: `interp NAME` runs `interp.cli.NAME` (its docstring is the help).
# Adding a command is one line here plus its module (see docs/architecture.md).
COMMANDS: list[str] = [
    "info",
    "scan",
    "compare",
    "prune",
    "calibrate",
    "binding",
    "saliency",
    "compress",
]


def _docstring(module_name: str) -> str | None:
    """A module's docstring, read from its source without importing it (None: no such module)."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        return None
    with open(spec.origin, encoding="utf-8") as f:
        return ast.get_docstring(ast.parse(f.read())) or ""


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The `interp` parser; only the subcommand named in `argv` is imported
    (all of them if `argv` is None)."""
    parser = argparse.ArgumentParser(prog="interp",
                                     description="Mechanistic interpretability for transformer LMs.")
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    for name in COMMANDS:
        module_name = f"interp.cli.{name}"
        doc = _docstring(module_name)
        if doc is None:
            continue  # listed, but its module is absent from this install
        p = sub.add_parser(name, help=doc.splitlines()[0] if doc else None, description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if chosen is None or chosen == name:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; every expected failure (an `InterpError`) is one line on stderr and exit code 2.

    Before the command runs, its `--out` folder (if it has one) is checked to be creatable and
    writable, so no result is computed only to be lost at the end. Commands raise `InterpError`
    for bad input; they need no error handling of their own.
    """
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        if getattr(args, "out", None) is not None:
            check_out_dir(args.out)
        # under torchrun: one rank of a data-parallel run
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            return _run_rank(args)
        return int(args._run(args) or 0)
    except InterpError as err:
        message = " ".join(str(err).split())  # one line, whatever the message holds
        print(f"interp {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interp {args.command}: interrupted; finished work is saved (rerun with --resume where "
              "supported).",
              file=sys.stderr)
        return 130


def add_device_map_arguments(parser: argparse.ArgumentParser) -> None:
    """`--device-map`, `--device-memory`, `--offload-folder`: a model too big for one device (accelerate)."""
    parser.add_argument("--device-map", default=None,
                        help="spread layers over devices: auto | balanced | sequential | a JSON file "
                             "{module: device}")
    parser.add_argument("--device-memory", default=None, metavar="DEV=SIZE,...",
                        help="per-device cap for --device-map, e.g. 0=20GiB,1=20GiB,cpu=64GiB")
    parser.add_argument("--offload-folder", default=None,
                        help="where --device-map puts layers that fit nowhere")


def device_map_kwargs(args) -> dict:
    """The `interp.load` keywords the device-map flags ask for."""
    # lazy: start-up
    from interp.models.load import device_map_kwargs as kwargs

    return kwargs(args.device_map, args.device_memory, args.offload_folder)


def _run_rank(args) -> int:
    """Join torchrun's process group, run the command (stdout kept from rank 0 alone), leave the group."""
    # lazy: start-up (torch is imported only under torchrun)
    from interp import parallel

    rank, _ = parallel.init()
    try:
        with open(os.devnull, "w") as null, contextlib.ExitStack() as quiet:
            if rank:  # rank 0 alone prints; every rank's errors still reach stderr (main's handler)
                quiet.enter_context(contextlib.redirect_stdout(null))
                quiet.enter_context(contextlib.redirect_stderr(null))
            return int(args._run(args) or 0)
    finally:
        parallel.finish()


if __name__ == "__main__":
    sys.exit(main())
