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
"""

import os
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
import torch.distributed as dist

from interp.errors import InterpError
from interp.progress import track

T = TypeVar("T")
R = TypeVar("R")


def init(backend: str | None = None) -> tuple[int, int]:
    """Join the process group torchrun describes (no-op alone); return `(rank, world_size)`."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


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
