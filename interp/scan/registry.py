"""The registry of scan analyses: name -> a small function that scores every head of a model.

An analysis is a function `run(model, config, ctx) -> AnalysisResult` plus a dataclass of settings
whose defaults are small enough for a CPU scan. It does its work in named units and wraps each in
`ctx.cached(unit, compute)`, so finished units are saved atomically and skipped on `--resume`.

    >>> @register("my_metric", MyConfig, "what it measures")          # doctest: +SKIP
    ... def my_metric(model, config, ctx):
    ...     part = ctx.cached("all", lambda: {"score": compute(model).tolist()})
    ...     return AnalysisResult({"score": Metric(part["score"], role="my role")}, primary="score")
"""

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from interp.errors import InterpError
from interp.parallel import check_work, is_main, map_units, rank_and_world
from interp.scan.store import Parts


class UnknownAnalysisError(InterpError, KeyError):
    """An analysis name the registry does not know."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass
class Metric:
    """One per-head score map: `scores[layer][head]` (or `[layer][column]` for per-layer analyses).

    role: what a high score means ("induction head"); higher_is: "role" when high scores mark the role.
    columns: labels of the second axis when it is not heads (e.g. binding mechanisms).
    """

    scores: list[list[float]]
    role: str
    description: str = ""
    columns: list[str] | None = None
    threshold: float | None = None  # scores above it mark the role in the report's table


@dataclass
class AnalysisResult:
    metrics: dict[str, Metric]
    primary: str
    summary: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"primary": self.primary, "summary": self.summary,
                "metrics": {k: {f.name: getattr(m, f.name) for f in fields(m)}
                            for k, m in self.metrics.items()}}


@dataclass
class Context:
    """What an analysis gets from the runner: saved units, progress, the memory budget."""

    parts: Parts
    progress: Callable[[int, int], None] = lambda done, total: None
    max_memory: int | None = None
    calibration: Any = None  # an interp.Calibration for analyses that apply it themselves (see `register`)

    def cached(self, unit: str, compute: Callable[[], Any]) -> Any:
        """The saved result of `unit`, or `compute()` saved (under torchrun: computed by rank 0 alone)."""
        if rank_and_world()[1] == 1:
            return self.parts.cached(unit, compute)
        return map_units(lambda _: _roundtrip(compute()), [unit], cached=lambda i: self.parts.get(unit),
                         on_done=lambda i, r: is_main() and self.parts.put(unit, r))[0]

    def map(self, units: list[tuple[str, Callable[[], Any]]], hint: str = "") -> list[Any]:
        """`[self.cached(name, compute) for name, compute in units]`, the units shared by the torchrun ranks.

        Each unit is computed exactly as in one process (compute must not depend on earlier units);
        rank 0 saves every finished unit and reports the global count to `progress`.
        """
        check_work(len(units), "work units in this analysis", hint)
        count = [0]

        def done(i: int, result: Any) -> None:
            if is_main():
                self.parts.put(units[i][0], result)
            count[0] += 1
            self.progress(count[0], len(units))

        out = map_units(lambda u: _roundtrip(u[1]()), units, cached=lambda i: self.parts.get(units[i][0]),
                        on_done=done)
        self.progress(len(units), len(units))
        return out


def _roundtrip(obj: Any) -> Any:
    """The JSON round-trip of `obj`: fresh and resumed units see identical values."""
    return json.loads(json.dumps(obj, allow_nan=False))


@dataclass(frozen=True)
class Analysis:
    name: str
    run: Callable[[Any, Any, Context], AnalysisResult]
    config: type
    help: str
    available: Callable[[], str | None] = lambda: None  # None when usable, else why not

    def make_config(self, overrides: dict | None = None):
        """The settings dataclass with `overrides` (unknown keys -> a clear error)."""
        names = {f.name: f for f in fields(self.config)}
        overrides = dict(overrides or {})
        unknown = set(overrides) - set(names)
        if unknown:
            raise InterpError(f"analysis {self.name!r} has no setting {', '.join(sorted(unknown))}; "
                              f"its settings are {', '.join(names)}.")
        defaults = self.config()
        checked = {k: _check_value(f"{self.name}.{k}", getattr(defaults, k), v) for k, v in overrides.items()}
        config = self.config(**checked)
        if callable(getattr(config, "check", None)):
            config.check()  # the analysis's own rules (ranges that relate settings)
        return config

    def settings(self, config) -> dict:
        return asdict(config)


def _check_value(name: str, default, value):
    """`value` for a setting whose default is `default`: same kind, counts positive, numbers finite and >=
    0."""
    def bad(want: str):
        return InterpError(f"--set {name}={json.dumps(value)}: {want} (default {json.dumps(default)}).")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("use true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("use an integer")
        if value < (0 if name.endswith("seed") else 1):
            raise bad("use a non-negative seed" if name.endswith("seed") else "use a positive integer")
    elif isinstance(default, float):
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or value < 0):
            raise bad("use a finite non-negative number")
        value = float(value)
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise bad("use a string")
    elif isinstance(default, (tuple, list)) or default is None:
        if value is None and default is None:
            return None
        if not isinstance(value, list) or not value:
            raise bad("use a non-empty JSON list, e.g. [1, 2]")
        element = default[0] if default else ""
        value = tuple(_check_value(f"{name}[{i}]", element, v) for i, v in enumerate(value))
    return value


ANALYSES: dict[str, Analysis] = {}
DEFAULT_ORDER = ("heads", "sinks", "retrieval", "binding", "saliency")


def register(name: str, config: type, help: str, available: Callable[[], str | None] = lambda: None):
    """Decorator: add `run(model, config, ctx)` to the registry under `name`. A scan with a
    calibration runs every analysis inside `interp.calibrate` (analyzers see enclosing editors)."""

    def wrap(run):
        ANALYSES[name] = Analysis(name, run, config, help, available)
        return run

    return wrap


def resolve(names: str | list[str] | None) -> list[Analysis]:
    """Analyses by name ("heads,sinks" or a list; None: every registered one that is usable)."""
    if names is None:
        return [ANALYSES[n] for n in _ordered() if ANALYSES[n].available() is None]
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise UnknownAnalysisError(f"no analysis named; choose from {', '.join(_ordered())}.")
    chosen = []
    for name in names:
        if name not in ANALYSES:
            raise UnknownAnalysisError(f"unknown analysis {name!r}; available: {', '.join(_ordered())}.")
        why = ANALYSES[name].available()
        if why:
            raise UnknownAnalysisError(f"analysis {name!r} cannot run here: {why}")
        if ANALYSES[name] not in chosen:
            chosen.append(ANALYSES[name])
    return chosen


def _ordered() -> list[str]:
    return sorted(ANALYSES, key=lambda n: (DEFAULT_ORDER.index(n) if n in DEFAULT_ORDER else 99, n))
