"""Compare two scans of one architecture: per-head score differences, roles gained / lost, summary deltas.

Examples:
    interp compare runs/base runs/calibrated                   # folders or scan.json files; prints a summary
    interp compare runs/base runs/calibrated --out runs/diff   # also compare.html and compare.json

The documented workflow: scan the base model, scan it again with `interp scan --calibration FILE`
(a calibration.json from `interp calibrate`), compare the two. Differences are B - A; summary
numbers with per-trial data get 95% bootstrap intervals. Scans of other architectures, or with no
analysis in common, are refused (exit 2).
"""

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", help="scan folder or scan.json (A, the baseline)")
    parser.add_argument("b", help="scan folder or scan.json (B)")
    parser.add_argument("--out", default=None, help="write compare.html and compare.json to this folder")
    parser.add_argument("--top", type=int, default=10, help="heads listed per metric (largest |B - A|)")


def run(args) -> int:
    # lazy: start-up (`interp --help` and other commands need none of this)
    from interp.report.compare import compare_scans, render_compare, text_summary
    from interp.scan import load_scan
    from interp.scan.store import atomic_write_json, atomic_write_text

    names = tuple(_name(Path(p)) for p in (args.a, args.b))
    if names[0] == names[1]:
        names = ("A", "B")
    diff = compare_scans(load_scan(args.a), load_scan(args.b), names=names, top=args.top)
    print(text_summary(diff))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "compare.html", render_compare(diff))
        atomic_write_json(out / "compare.json", json.loads(json.dumps(diff)))
        print(f"compare.html and compare.json written to {out}/", file=sys.stderr)
    return 0


def _name(path: Path) -> str:
    """A scan folder's name (or a JSON file's stem) to label it in the comparison."""
    if path.is_dir() or path.name == "scan.json":
        return (path if path.is_dir() else path.parent).resolve().name or str(path)
    return path.stem
