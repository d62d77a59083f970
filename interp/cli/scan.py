"""All analyzers on one model -> scan.json + report.html (resumable, offline).

Examples:
    interp scan                                   # embedded SmolLM2, every analysis, into ./scan
    interp scan path/to/model --analyses heads,sinks --out runs/m1
    interp scan --resume --out runs/m1            # continue a killed run with its own settings
    interp scan --analyses heads --set heads.n_random=4 --set heads.half_len=32
    interp scan --list                            # the registered analyses
    interp scan --calibration runs/cal/calibration.json --out runs/m1-cal   # scan the calibrated model

A scan never replaces an earlier one in the same --out folder unless --overwrite is given.
"""

import argparse
import json
import sys

from interp.cli import add_device_map_arguments, device_map_kwargs
from interp.errors import InterpError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default="smollm2",
                        help="'smollm2' (embedded, default), a local HF folder or a .gguf file")
    parser.add_argument("--analyses", default=None,
                        help="comma-separated: heads,sinks,retrieval,binding,saliency (default: all usable; "
                             "on --resume: the earlier run's)")
    parser.add_argument("--out", default="scan", help="output folder (default: ./scan)")
    parser.add_argument("--max-memory", default=None, help="memory budget for attention scratch, e.g. 4GB")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:1 ...")
    add_device_map_arguments(parser)
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    parser.add_argument("--resume", action="store_true", help="continue the scan in --out where it stopped")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier scan in --out")
    parser.add_argument("--set", action="append", default=[], metavar="ANALYSIS.KEY=VALUE",
                        help="override one analysis setting (JSON value), repeatable")
    parser.add_argument("--calibration", default=None, metavar="FILE",
                        help="run every analysis on the model calibrated by this calibration.json (interp "
                             "calibrate)")
    parser.add_argument("--no-report", action="store_true", help="write scan.json only")
    parser.add_argument("--export", default="",
                        help="also export heatmaps: png,svg (needs kaleido + chromium)")
    parser.add_argument("--list", action="store_true", help="list the registered analyses and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress display")


def parse_sets(items: list[str]) -> dict[str, dict]:
    """`["heads.n_random=4"]` -> `{"heads": {"n_random": 4}}` (values parsed as JSON, else kept as text)."""
    config: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        analysis, dot, name = key.partition(".")
        if not (sep and dot and analysis and name):
            raise InterpError(f"--set {item!r}: write it as ANALYSIS.KEY=VALUE, e.g. --set heads.n_random=4.")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        config.setdefault(analysis, {})[name] = parsed
    return config


def run(args) -> int:
    # lazy: start-up
    from interp.report import export_figures
    from interp.report.export import check_export
    from interp.scan import available, run_scan

    if args.list:
        for name, help_text in available().items():
            print(f"{name:10s} {help_text}")
        return 0
    formats = [f.strip() for f in args.export.split(",") if f.strip()]
    if args.export:
        check_export(formats)  # before the scan, not after it
    doc = run_scan(args.model, analyses=args.analyses, out=args.out, resume=args.resume,
                   overwrite=args.overwrite,
               config=parse_sets(args.set) or None, device=args.device, dtype=args.dtype,
               max_memory=args.max_memory, progress=not args.quiet, report=not args.no_report,
               calibration=args.calibration, load_kwargs=device_map_kwargs(args))
    print(f"scan.json{'' if args.no_report else ' and report.html'} written to {args.out}/", file=sys.stderr)
    if args.export:
        for path in export_figures(doc, f"{args.out}/figures", formats=formats):
            print(f"  {path}", file=sys.stderr)
    return 0
