"""The `interp` command line: one subcommand per module, registered by name.

Each subcommand module defines `add_arguments(parser)` and `run(args) -> int`; the registry maps
names to modules so `interp --help` stays fast (modules import on use).

    interp info [MODEL]            model summary and a captured-attention summary
    interp scan [MODEL]            all analyzers -> scan.json + report.html
    interp prune MODEL             retrieval heads vs random heads, ablated
    interp calibrate MODEL         ACT-style attention calibration on few-shot tasks
    interp binding MODEL           positional / lexical / reflexive binding mechanisms
    interp saliency MODEL          attention vs gradient saliency agreement
    interp compress MODEL          head-level KV-cache compression: selection methods compared
"""

import argparse
import importlib
import sys

from interp.errors import InterpError

COMMANDS: dict[str, str] = {
    "info": "interp.cli.info",
    "scan": "interp.cli.scan",
    "prune": "interp.cli.prune",
    "calibrate": "interp.cli.calibrate",
    "binding": "interp.cli.binding",
    "saliency": "interp.cli.saliency",
    "compress": "interp.cli.compress",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interp", description="Mechanistic interpretability for transformer LMs.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue  # a subcommand not built yet
        doc = (module.__doc__ or "").strip().splitlines()
        p = sub.add_parser(name, help=doc[0] if doc else None, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except InterpError as err:
        print(f"interp {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interp {args.command}: interrupted; finished work is saved (rerun with --resume where supported).",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
