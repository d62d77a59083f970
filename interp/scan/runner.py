"""`interp.run_scan`: one loaded model through every selected analysis, to `scan.json` + `report.html`.

    >>> import interp
    >>> doc = interp.run_scan("smollm2", analyses="heads", out="runs/smollm2")          # doctest: +SKIP
    >>> doc["analyses"]["heads"]["metrics"]["induction"]["scores"][5][3]            # doctest: +SKIP

Crash safety: `scan.json` is rewritten atomically after every analysis, finished units of the
running analysis are saved under `parts/`, and `resume=True` continues a killed run; the final
`scan.json` equals an uninterrupted run's. An existing scan in `out` is never replaced unless
`overwrite=True` (or continued with `resume=True`).

Memory: one model plus the largest analysis's working set; `max_memory` bounds the attention
scratch of the head detectors (query rows per chunk).
"""

import json
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

from interp.capture.budget import parse_bytes
from interp.errors import InterpError
from interp.intervene.calibrate import Calibration, calibrate
from interp.models.load import load
from interp.models.model import Model
from interp.parallel import check_same, is_main, local_device, on_main
from interp.progress import bar as progress_bar
from interp.report import render_html
from interp.scan import schema
from interp.scan.examples import all_heads, pattern_examples
from interp.scan.registry import Context, resolve
from interp.scan.store import Parts, ScanFileError, atomic_write_json, atomic_write_text, read_json

# progress(analysis, done, total): the rich display by default; tests pass their own.
ProgressFn = Callable[[str, int, int], None]


RESUMABLE = ("max_memory",)  # settings a resumed run may change: they bound memory, not the numbers


class ScanExistsError(InterpError, FileExistsError):
    """`out` already holds a scan and neither resume nor overwrite was asked for."""


def prepare_out(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Create `out`, check it is writable, and refuse to clobber an earlier scan."""
    if out.exists() and not out.is_dir():
        raise ScanFileError(f"--out {out} is a file, not a folder; choose a folder for the scan.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".interp-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ScanFileError(f"the output folder {out} is not writable ({err.strerror or err}); choose "
                            f"another --out folder.") from err
    earlier = [p.name for p in (out / "scan.json", out / "report.html", out / "parts") if p.exists()]
    if earlier and not resume:
        if not overwrite:
            raise ScanExistsError(f"{out} already holds a scan ({', '.join(earlier)}); pass --resume to "
                                  f"continue it, --overwrite to replace it, or choose another --out folder.")
        shutil.rmtree(out / "parts", ignore_errors=True)


def run_scan(
    model="smollm2",
    *,
    analyses: str | list[str] | None = None,
    out: str | Path = "scan",
    resume: bool = False,
    overwrite: bool = False,
    config: dict[str, dict] | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    max_memory: str | int | None = None,
    progress: bool | ProgressFn = True,
    report: bool = True,
    examples: bool = True,
    calibration=None,
    load_kwargs: dict | None = None,
) -> dict:
    """Run analyses on `model` (an `interp.Model` or a reference for `interp.load`); return the scan document.

    analyses: names or "a,b" (None: every usable registered analysis; on resume: the earlier run's).
    config: per-analysis setting overrides, e.g. `{"heads": {"n_random": 4}}`.
    calibration: an `interp.Calibration` or the path of a `calibration.json` (`interp calibrate`): every
    analysis then runs on the calibrated model, and `settings["calibration"]` records it.
    load_kwargs: more `interp.load` keywords, e.g. `{"device_map": "auto", "max_memory": {...}}`.
    """
    out = Path(out)
    # every setting is checked before anything touches the disk
    budget = parse_bytes(max_memory) if max_memory is not None else None
    if calibration is not None and not isinstance(calibration, Calibration):
        calibration = Calibration.load(calibration)  # a bad file fails before anything touches the disk
    if analyses is not None:
        resolve(analyses)
    check_config(config)
    _dtype(dtype)
    created = not out.exists()

    def prepare() -> bool:
        prepare_out(out, resume=resume, overwrite=overwrite)
        return not (resume and (out / "scan.json").exists())

    fresh = on_main(prepare)  # under torchrun rank 0 alone touches the disk
    try:
        return _scan(model, analyses, out, resume, config, device, dtype, max_memory, budget,
                     progress if is_main() else False, report, examples, calibration, load_kwargs or {})
    except BaseException:
        if is_main():
            if fresh:
                _forget_unstarted(out)
            if created and out.is_dir() and not any(out.iterdir()):
                out.rmdir()  # leave no empty folder behind a scan that never started
        raise


def check_config(config: dict[str, dict] | None) -> None:
    """Raise a clear `InterpError` for any unknown analysis, unknown setting or unusable value in `config`."""
    if config is None:
        return
    if not isinstance(config, dict) or not all(isinstance(v, dict) for v in config.values()):
        raise InterpError("config must map analysis names to settings, e.g. {\"heads\": {\"n_random\": 4}}.")
    for name, overrides in config.items():
        resolve([name])[0].make_config(overrides)


def _forget_unstarted(out: Path) -> None:
    """After a failed fresh run with no finished work, remove its files so a corrected rerun starts
    cleanly."""
    doc_path = out / "scan.json"
    parts = out / "parts"
    if any(parts.rglob("*.json")) if parts.exists() else False:
        return  # finished units: keep them for --resume
    try:
        doc = json.loads(doc_path.read_text()) if doc_path.exists() else {}
    except (OSError, json.JSONDecodeError):
        return
    if doc.get("analyses"):
        return
    doc_path.unlink(missing_ok=True)
    (out / "timings.json").unlink(missing_ok=True)
    shutil.rmtree(parts, ignore_errors=True)


def _scan(model, analyses, out: Path, resume, config, device, dtype, max_memory, budget, progress, report,
          examples, calibration, load_kwargs) -> dict:
    import torch

    doc_path = out / "scan.json"
    previous = on_main(lambda: schema.validate(read_json(doc_path, "scan file"), str(doc_path))
                       if resume and doc_path.exists() else None)
    if analyses is None and previous is not None:
        analyses = previous["settings"]["analyses"]
    chosen = resolve(analyses)
    if config:
        unknown = set(config) - {a.name for a in chosen}
        if unknown:
            raise InterpError(f"settings given for {', '.join(sorted(unknown))}, which this scan does not "
                              "run.")
    configs = {a.name: a.make_config((config or {}).get(a.name)) for a in chosen}
    if previous is not None and config is None:  # resume with the earlier run's settings
        configs = {a.name: a.make_config(previous["settings"]["config"].get(a.name)) for a in chosen}
    if not isinstance(model, Model):
        model = load(model, device=local_device(device), dtype=_dtype(dtype), **load_kwargs)
    settings = _jsonable({"analyses": [a.name for a in chosen], "device": str(model.device),
                          "dtype": str(next(model.hf.parameters()).dtype).removeprefix("torch."),
                          "max_memory": max_memory, "config": {n: asdict(c) for n, c in configs.items()}})
    if calibration is not None:
        calibration.check(model)
        settings["calibration"] = _jsonable(calibration.to_json())
    identity = schema.model_identity(model)
    check_same({**settings, "device": settings["device"].split(":")[0], "model": identity, "resume": resume},
               "scan settings or model")
    if previous is not None:
        _check_same_run(previous, identity, settings, doc_path)
        doc = previous
        doc["settings"].update({k: settings[k] for k in RESUMABLE})
    else:
        doc = schema.new_document(identity, settings)
    doc["status"] = "running"
    _write(atomic_write_json, doc_path, doc)
    timings = {}
    with _display(progress, [a.name for a in chosen]) as tick:
        for analysis in chosen:
            if analysis.name in doc["analyses"]:
                tick(analysis.name, 1, 1)
                continue
            start, cpu = time.perf_counter(), time.process_time()
            ctx = Context(Parts(out, analysis.name), lambda d, t, n=analysis.name: tick(n, d, t), budget,
                          calibration)
            with torch.no_grad(), _calibrated(model, calibration):
                result = analysis.run(model, configs[analysis.name], ctx)
            doc["analyses"][analysis.name] = _jsonable(result.to_json())
            timings[analysis.name] = {"wall_s": round(time.perf_counter() - start, 2),
                                      "cpu_s": round(time.process_time() - cpu, 2)}
            _write(atomic_write_json, doc_path, doc)
            _write(_merge_timings, out / "timings.json", timings)
    if examples:
        with _calibrated(model, calibration):
            doc["examples"] = Context(Parts(out, "examples")).cached(
                "patterns", lambda: pattern_examples(model, all_heads(doc)))
    doc["status"] = "complete"
    _write(atomic_write_json, doc_path, doc)
    _write(_merge_timings, out / "timings.json", timings)
    if report:
        _write(lambda: atomic_write_text(out / "report.html", render_html(doc)))
    return doc


def _write(fn, *args) -> None:
    """Write a scan file from rank 0 alone (every rank holds the same document)."""
    if is_main():
        fn(*args)


def load_scan(path: str | Path) -> dict:
    """Read and check a `scan.json` (or the one inside a scan folder)."""
    path = Path(path)
    path = path / "scan.json" if path.is_dir() else path
    if not path.exists():
        raise ScanFileError(f"no scan at {path}; run `interp scan --out {path.parent}` first.")
    return schema.validate(read_json(path, "scan file"), str(path))


def _check_same_run(previous: dict, identity: dict, settings: dict, path: Path) -> None:
    for key in ("dtype", "device"):  # checked first: another dtype also changes the weights' fingerprint
        if previous["settings"].get(key) != settings.get(key):
            raise ScanFileError(f"{path} was made with --{key} {previous['settings'].get(key)}, not "
                                f"{settings.get(key)}; resume with --{key} {previous['settings'].get(key)}, "
                                f"or scan into a new --out folder.")
    fields = [k for k in ("fingerprint", "name", "n_layers", "n_heads")
              if previous["model"].get(k) != identity.get(k)]
    if fields:
        raise ScanFileError(f"{path} was made with another model ({previous['model'].get('name')!r}, "
                            f"differing in {', '.join(fields)}); resume with the same model, or scan into a "
                            "new --out folder.")
    diff = [k for k in settings if k not in RESUMABLE and previous["settings"].get(k) != settings.get(k)]
    if diff:
        raise ScanFileError(f"{path} was made with other settings ({', '.join(diff)} differ); resume with "
                            "the earlier settings (omit them to reuse them), or scan into a new --out "
                            "folder.")


def _calibrated(model, calibration):
    """`interp.calibrate(model, calibration)`, or nothing when there is no calibration."""
    return nullcontext() if calibration is None else calibrate(model, calibration)


def _jsonable(obj):
    return json.loads(json.dumps(obj, allow_nan=False))


def _dtype(name: str):
    import torch

    value = getattr(torch, str(name).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise InterpError(f"unknown dtype {name!r}; use float32, bfloat16 or float16.")
    return value


def _merge_timings(path: Path, timings: dict) -> None:
    old = {}
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            old = {}
    atomic_write_json(path, {**old, **timings})


class _display:
    """A rich progress bar per analysis (or the caller's callback, or nothing)."""

    def __init__(self, progress, names: list[str]):
        self.progress, self.names, self.bar, self.tasks = progress, names, None, {}

    def __enter__(self):
        if callable(self.progress):
            return self.progress
        if not self.progress:
            return lambda name, done, total: None
        self.bar = progress_bar()
        self.bar.__enter__()
        self.tasks = {n: self.bar.add_task(n, total=None) for n in self.names}
        return lambda name, done, total: self.bar.update(self.tasks[name], completed=done, total=total)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False
