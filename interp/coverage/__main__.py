"""`python -m interp.coverage`: run the sweep, print the table or write it to `--out`
(see `interp.coverage`)."""

from interp import coverage
from interp.coverage.checks import Result
from interp.coverage.sweep import causal_lm_types, sweep, table
from interp.errors import InterpError


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import sys
    import time
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m interp.coverage", description=coverage.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("types", nargs="*", help="model types to check (default: every causal-LM type)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per model type (default 60)")
    parser.add_argument("--out",
                        help="write the Markdown table here (default: stdout); the published table is "
                                      "docs/coverage.md")
    parser.add_argument("--json", help="also write the results as JSON here")
    parser.add_argument("--from-json",
                        help="re-render the table from a JSON file written by --json (no sweep)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.from_json:
        results = [Result(**r) for r in json.loads(Path(args.from_json).read_text())]
        args.types = [] if len(results) == len(causal_lm_types()) else [r.model_type for r in results]
    else:
        try:
            results = sweep(args.types or None, jobs=args.jobs, time_limit=args.time_limit,
                            progress=sys.stderr.isatty())
        except InterpError as err:
            print(f"interp.coverage: error: {err}", file=sys.stderr)
            return 2
    text = table(results)
    out = args.out
    if out:
        Path(out).write_text(text)
    else:
        print(text)
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in results], indent=1))
    print(f"{sum(r.status == 'pass' for r in results)}/{len(results)} pass in "
          f"{time.perf_counter() - start:.0f} s"
          + (f"; table: {out}" if out else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
