"""Data-parallel runs over many prompts with `torch.distributed`: shard, run, merge in order.

The same script runs alone or under `torchrun --nproc-per-node N`: prompts are cut into batches
first, batches are dealt round-robin to the ranks, and the per-batch results come back to every
rank in the original order. Because each batch is the same whatever the world size (same padding,
same prompts), the merged result is identical to a single-process run.

    >>> from interp.parallel import map_batches
    >>> map_batches(lambda batch: [len(p) for p in batch], ["a", "bb", "ccc"], batch_size=2, progress=False)
    [[1, 2], [3]]

Under torchrun call `init()` first (gloo on CPU, NCCL on GPU; each rank takes GPU `LOCAL_RANK`).
Results travel with `all_gather_object`, so keep them small (statistics, scores) and on CPU.

`map_units` is the general form the analyzers use: named work units (a batch of trials, one ablation
condition, one candidate head set) are dealt round-robin, computed in rounds of `world` units, and
every finished round is handed to `on_done` in unit order on every rank (rank 0 saves it, so a killed
run resumes from the last finished round). `check_same` fails every rank when their settings differ.
"""

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from interp.errors import InterpError
from interp.progress import track

T = TypeVar("T")
_IN_UNIT: ContextVar[bool] = ContextVar("interp_in_parallel_unit", default=False)  # nested calls run locally
R = TypeVar("R")


class ParallelError(InterpError):
    """A data-parallel run that cannot go on: bad backend, more ranks than work, ranks that disagree."""


def init(backend: str | None = None) -> tuple[int, int]:
    """Join the process group torchrun describes (no-op alone); return `(rank, world_size)`.

    `backend` (or the environment variable `INTERP_DIST_BACKEND`): "gloo" or "nccl"; default NCCL
    when CUDA is available, else gloo.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1
    if not dist.is_initialized():
        backend = backend or os.environ.get("INTERP_DIST_BACKEND") or (
            "nccl" if torch.cuda.is_available() else "gloo")
        if backend not in ("gloo", "nccl"):
            raise ParallelError(f"unknown torch.distributed backend {backend!r}; use gloo (CPU) or nccl "
                                "(GPU).")
        if backend == "nccl" and not torch.cuda.is_available():
            raise ParallelError("NCCL needs CUDA GPUs and this machine has none; use "
                                "INTERP_DIST_BACKEND=gloo (CPU ranks) or run on GPU machines.")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def finish() -> None:
    """Leave the process group `init` joined (no-op alone)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that writes files and shows progress."""
    return rank_and_world()[0] == 0


def barrier() -> None:
    if _world() > 1:
        dist.barrier()


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (`obj` itself in a single process or inside a `map_units` unit)."""
    if _world() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn: Callable[[], R]) -> R:
    """`fn()` run on rank 0 only, its result (or its `InterpError`) on every rank (inside a unit: `fn()`)."""
    if _world() == 1:
        return fn()
    outcome: tuple = (None, None)
    if is_main():
        try:
            outcome = (fn(), None)
        except InterpError as err:
            outcome = (None, err)
    value, err = broadcast(outcome)
    if err is not None:
        raise err
    return value


def local_device(device: str) -> str:
    """Under torchrun, "cuda" means this rank's GPU (`cuda:LOCAL_RANK`); other names are kept."""
    if device == "cuda" and rank_and_world()[1] > 1:
        return f"cuda:{os.environ.get('LOCAL_RANK', 0)}"
    return device


def check_same(settings: Any, what: str = "settings") -> None:
    """Raise `ParallelError` on every rank unless all ranks pass the same (JSON-able) `settings`.

    Inside a `map_units` unit (one rank's work) there is nobody to compare with: no check.
    """
    world = _world()
    if world == 1:
        return
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    every: list[str | None] = [None] * world
    dist.all_gather_object(every, digest)
    odd = [r for r, d in enumerate(every) if d != every[0]]
    if odd:
        raise ParallelError(f"ranks {odd} were started with other {what} than rank 0; start every rank with "
                            f"the same command line and files.")


def check_work(n_units: int, what: str, hint: str = "") -> None:
    """Raise `ParallelError` when there are more ranks than `n_units` work units of `what`.

    Inside a `map_units` unit the units run locally, so any count will do.
    """
    world = _world()
    if world > n_units:
        raise ParallelError(f"{world} ranks but only {n_units} {what} to share; start at most {n_units} "
                            f"processes (--nproc-per-node){' or ' + hint if hint else ''}.")


def map_units(
    fn: Callable[[T], R],
    units: Sequence[T],
    *,
    cached: Callable[[int], R | None] | None = None,
    on_done: Callable[[int, R], None] | None = None,
) -> list[R]:
    """`[fn(u) for u in units]` with the units dealt round-robin over the ranks; the list on every rank.

    `cached(i)` (asked on rank 0 only) returns a saved result of unit `i` or None; the rest run in rounds
    of `world` units, and after each round `on_done(i, result)` is called for its units in order, on
    every rank (guard writes with `is_main()`). Results must pickle; tensors come back on CPU.
    A call made inside a unit of another `map_units` (a scan unit calling `find_sinks`, say) runs all
    its units locally: that outer unit belongs to one rank, so there is nobody to gather with.

        >>> map_units(lambda u: u * u, [1, 2, 3])
        [1, 4, 9]
    """
    if _IN_UNIT.get():  # inside another map_units' unit: that unit runs on one rank, so this call is local
        results = [fn(unit) for unit in units]
        for i, result in enumerate(results):
            if on_done is not None:
                on_done(i, result)
        return results
    rank, world = rank_and_world()
    saved = {}
    if cached is not None and rank == 0:
        saved = {i: r for i in range(len(units)) if (r := cached(i)) is not None}
    saved = broadcast(saved)
    todo = [i for i in range(len(units)) if i not in saved]
    results = dict(saved)
    for start in range(0, len(todo), world):
        round_ = todo[start:start + world]
        mine = {i: _to_cpu(_run_unit(fn, units[i])) for i in round_[rank:rank + 1]}
        if world > 1:
            gathered: list[dict | None] = [None] * world
            dist.all_gather_object(gathered, mine)
            mine = {i: r for part in gathered for i, r in part.items()}
        for i in round_:
            results[i] = mine[i]
            if on_done is not None:
                on_done(i, mine[i])
    return [results[i] for i in range(len(units))]


def _run_unit(fn: Callable[[T], R], unit: T) -> R:
    token = _IN_UNIT.set(True)
    try:
        return fn(unit)
    finally:
        _IN_UNIT.reset(token)


def _world() -> int:
    """The ranks a collective call would involve: 1 alone or inside a `map_units` unit."""
    return 1 if _IN_UNIT.get() else rank_and_world()[1]


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def map_batches(
    fn: Callable[[Sequence[T]], R], items: Sequence[T], *, batch_size: int = 1, progress: bool = True
) -> list[R]:
    """`[fn(batch) for batch in batches(items)]`, the batches spread over the ranks, merged in order."""
    if batch_size < 1:
        raise InterpError(f"batch_size must be >= 1, got {batch_size}.")
    batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    rank, world = rank_and_world()
    mine = range(rank, len(batches), world)
    steps = track(mine, f"rank {rank}/{world}", enabled=progress and rank == 0)
    local = {i: _to_cpu(fn(batches[i])) for i in steps}
    if world == 1:
        return [local[i] for i in range(len(batches))]
    gathered: list[dict | None] = [None] * world
    dist.all_gather_object(gathered, local)
    merged = {i: r for part in gathered for i, r in part.items()}
    return [merged[i] for i in range(len(batches))]


def _to_cpu(obj):
    """Move tensors in nested results to CPU so they pickle across NCCL ranks."""
    if torch.is_tensor(obj):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    if hasattr(obj, "to") and hasattr(obj, "__dataclass_fields__"):
        return obj.to("cpu")
    return obj
