"""ACT-style attention calibration on few-shot classification: search heads on dev, report test accuracy.

    interp calibrate smollm2 --task sst2 --shots 4 --dev 64 --test 500
    interp calibrate smollm2 --task trec --heads 12:3,14:0          # no search: these heads
    interp calibrate smollm2 --task sst2 --calibration runs/calibrate-sst2/calibration.json
    interp calibrate smollm2 --task-file my.jsonl --shots 2 --dev 16 --test 50   # your own task

A task file is JSON lines: a first line naming the label words, then one example a line
(`interp.tasks.task_file` documents the format):

    {"labels": ["negative", "positive"], "input_prefix": "Review: ", "answer_prefix": "Sentiment:"}
    {"text": "a gorgeous, witty, seductive movie.", "label": "positive", "split": "train"}

Few-shot prompts are scored by label-word log-probabilities. Heads are searched on a dev split
from the training pool (per-head screening, then greedy set building, `--budget` dev evaluations);
accuracy is reported uncalibrated vs calibrated on a disjoint test split, with percentile
bootstrap 95% intervals for each and for the paired difference. Writes `calibration.json`
(re-apply it with `--calibration` or `interp.intervene.calibrate.Calibration.load`) and
`report.json` to `--out`.
"""

import argparse
import json
import time

from interp.cli import add_device_map_arguments, device_map_kwargs
from interp.errors import InterpError, check_out_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="embedded name (smollm2), local directory or .gguf file")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--task", help="few-shot task: sst2, agnews, trec (interp.tasks.fewshot.TASKS)")
    which.add_argument("--task-file",
                       help="your own task: a JSON-lines file (format: interp.tasks.task_file)")
    parser.add_argument("--shots", type=int, default=4,
                        help="demonstrations per prompt (balanced over labels)")
    parser.add_argument("--dev", type=int, default=64, help="dev examples for the head search")
    parser.add_argument("--test", type=int, default=500, help="test examples (disjoint from demos and dev)")
    parser.add_argument("--beta", type=float, default=0.4, help="factor kept on sink attention (ACT: 0.4)")
    parser.add_argument("--tau", type=float, default=0.1, help="column-mean threshold of a sink (ACT: 0.1)")
    parser.add_argument("--exempt", default="first_sink",
                        help="first_sink, first_token or none: the sink left undamped: each head's first "
                             "detected sink (ACT's code, default) or the first token")
    parser.add_argument("--budget", type=int, default=60, help="dev evaluations the head search may spend")
    parser.add_argument("--max-heads", type=int, default=8, help="largest head set the search builds")
    parser.add_argument("--skip-first", type=int, default=2, help="first layers never calibrated (ACT: 2)")
    parser.add_argument("--skip-last", type=int, default=1, help="last layers never calibrated (ACT: 1)")
    parser.add_argument("--layers", help="explicit candidate layers, e.g. 4,8,12 (overrides --skip-*)")
    parser.add_argument("--heads",
                        help="calibrate these heads (LAYER.HEAD labels), no search (e.g. 12.3,14.0)")
    parser.add_argument("--calibration", help="re-apply a saved calibration.json, no search")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--data",
                        help="folder holding sst2/ agnews/ trec/ (default: the shipped data/fewshot)")
    parser.add_argument("--out", help="output folder (default runs/calibrate-TASK)")
    parser.add_argument("--device", default="cpu")
    add_device_map_arguments(parser)
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    # lazy: start-up
    from rich.console import Console
    from rich.table import Table

    import interp
    from interp.axes import head_label
    from interp.intervene.calibrate import Calibration, calibrate, model_identity, parse_heads
    from interp.intervene.head_search import SearchConfig, search_heads
    from interp.parallel import is_main, local_device
    from interp.tasks.fewshot import bootstrap_ci, evaluate, get_task, make_split
    from interp.tasks.task_file import read_task_file

    console = Console(stderr=True)
    task = read_task_file(args.task_file) if args.task_file else get_task(args.task)  # fails before loading
    cal = Calibration.load(args.calibration) if args.calibration else None
    manual = parse_heads(args.heads) if args.heads else None
    Calibration([], beta=args.beta, tau=args.tau, exempt=args.exempt)  # validates the settings early
    if cal is None and manual is None and args.dev < 1:
        raise InterpError("a head search needs --dev >= 1 examples; or pass --heads / --calibration.")
    out = check_out_dir(args.out or f"runs/calibrate-{task.name}")  # before any computation
    split = make_split(task, shots=args.shots, dev=args.dev, test=args.test, seed=args.seed,
                       data_dir=args.data)
    with console.status(f"loading {args.model} ..."):
        model = interp.load(args.model, device=local_device(args.device), **device_map_kwargs(args))
    progress = not args.no_progress
    started = time.time()

    def score(heads, examples, label):
        cal_ = Calibration(heads, beta=args.beta, tau=args.tau, exempt=args.exempt)
        with calibrate(model, cal_):
            return evaluate(model, task, split.demos, examples, batch_size=args.batch_size, progress=progress,
                            description=label)

    search = None
    if cal is not None:
        cal.check(model)
    else:
        if manual is None:
            layers = [int(x) for x in args.layers.split(",")] if args.layers else None
            config = SearchConfig(budget=args.budget, max_heads=args.max_heads, skip_first=args.skip_first,
                                  skip_last=args.skip_last, layers=layers)

            def dev_score(heads):
                s = score(heads, split.dev, f"dev ({len(heads)} heads)")
                return s.accuracy, s.gold_logprob

            search = search_heads(dev_score, n_layers=model.adapter.n_layers(), n_heads=model.adapter.n_heads,
                                  config=config, progress=progress)
            manual = search.heads
        cal = Calibration(manual, beta=args.beta, tau=args.tau, exempt=args.exempt,
                          model=model_identity(model),
                          meta={"task": task.name, "shots": args.shots, "dev": args.dev, "seed": args.seed,
                                "dev_baseline": list(search.baseline) if search else None,
                                "dev_calibrated": list(search.score) if search else None})
    plain = evaluate(model, task, split.demos, split.test, batch_size=args.batch_size, progress=progress,
                     description="test (uncalibrated)")
    with calibrate(model, cal):
        tuned = evaluate(model, task, split.demos, split.test, batch_size=args.batch_size, progress=progress,
                         description="test (calibrated)")
    diff = tuned.correct.float() - plain.correct.float()
    report = {
        "model": model_identity(model), "task": task.name, "shots": args.shots, "dev": args.dev,
        "test": args.test, "seed": args.seed, "beta": cal.beta, "tau": cal.tau, "exempt": cal.exempt,
        "heads": [list(h) for h in cal.heads],
        "uncalibrated": {"accuracy": plain.accuracy, "ci95": plain.ci(seed=args.seed)},
        "calibrated": {"accuracy": tuned.accuracy, "ci95": tuned.ci(seed=args.seed)},
        "difference": {"accuracy": diff.mean().item(), "ci95": bootstrap_ci(diff, seed=args.seed)},
        "search": search.to_json() if search else None, "seconds": round(time.time() - started, 1),
    }
    if is_main():  # under torchrun rank 0 alone writes
        out.mkdir(parents=True, exist_ok=True)
        if not args.calibration:
            cal.save(out / "calibration.json")
        (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")

    table = Table(title=f"{model.name} · {task.name} · {args.shots}-shot · test n={args.test}")
    for col in ("", "accuracy", "95% CI"):
        table.add_column(col, justify="right")
    for name, s in (("uncalibrated", report["uncalibrated"]), ("calibrated", report["calibrated"]),
                    ("difference", report["difference"])):
        table.add_row(name, f"{100 * s['accuracy']:.1f}%",
                      f"[{100 * s['ci95'][0]:.1f}, {100 * s['ci95'][1]:.1f}]")
    Console().print(table)
    Console().print(f"heads ({len(cal.heads)}): "
                    f"{', '.join(head_label(a, b) for a, b in cal.heads) or 'none'}; wrote "
                    f"{out / 'report.json'}")
    return 0
