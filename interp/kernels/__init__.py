"""Streaming per-head attention statistics behind one dispatch.

Two exact implementations compute the same `RowStats` / `ColumnStats` (see `results.py`):

| backend  | where                         | how                                                       |
|----------|-------------------------------|-----------------------------------------------------------|
| `torch`  | CPU and GPU                   | query-chunked fp32 scores, O(chunk x key) transient        |
| `triton` | GPU (CPU: `TRITON_INTERPRET=1`) | fused flash pass for rows + output, second pass for columns |

`backend="auto"` takes the torch path everywhere unless Triton is opted into: the Triton kernels
are validated against the torch path under Triton's CPU interpreter, and on a GPU only by the
`gpu`-marked tests, so `auto` picks them on CUDA tensors only with `INTERP_TRITON=1` in the
environment (and Triton installed, no `top_k`, no learned sinks). `backend="triton"` asks for them
directly. Triton tiles are powers of two >= 16 (`tile_size`), whatever `chunk` a memory budget gives.

    >>> import torch
    >>> q, k = torch.randn(1, 4, 7, 16), torch.randn(1, 2, 7, 16)
    >>> rows = attention_stats(q, k, None, scaling=0.25, is_causal=True, spans=[(0, 1)], top_k=2)
    >>> tuple(rows.span_mass.shape), tuple(rows.topk_index.shape)
    ((1, 4, 7, 1), (1, 4, 7, 2))
"""

import importlib.util
import os
from collections.abc import Callable

import torch
from torch import Tensor

from interp.axes import HeadOutput, Key, Query, Value
from interp.errors import InterpError
from interp.kernels import reference
from interp.kernels.results import ColumnStats, RowStats
from interp.kernels.spans import Spans, span_bounds
from interp.kernels.workspace import Workspace

Result = tuple[RowStats, ColumnStats | None, HeadOutput | None]


def _torch(query, key, value, mask, *, scaling, is_causal, softcap, spans, top_k, columns, chunk, sinks=None,
           workspace=None):
    return reference.stats(query, key, mask, scaling=scaling, is_causal=is_causal, softcap=softcap,
                           spans=spans, top_k=top_k, columns=columns, value=value, chunk=chunk, sinks=sinks,
                           workspace=workspace)


def _triton(query, key, value, mask, *, scaling, is_causal, softcap, spans, top_k, columns, chunk, sinks=None,
            workspace=None):  # the fused kernel needs no scratch buffers
    if sinks is not None:
        raise InterpError("the triton backend does not apply learned sinks; use backend='torch' or 'auto'.")
    if top_k:
        raise InterpError("the triton backend does not compute top_k; use backend='torch' or 'auto' for "
                          "top-k.")
    from interp.kernels.triton_stats import fused_stats  # lazy: optional dependency (triton)

    out, rows, cols = fused_stats(query, key, value, mask, scaling=scaling, is_causal=is_causal,
                                  softcap=softcap, spans=spans, columns=columns, block=tile_size(chunk))
    return rows, cols, out


BACKENDS: dict[str, Callable[..., Result]] = {"torch": _torch, "triton": _triton}
OPT_IN = "INTERP_TRITON"  # =1: backend="auto" takes Triton on CUDA tensors
TILES = (16, 32, 64, 128)


def tile_size(chunk: int | None) -> int:
    """A valid Triton tile for `chunk` query rows: the largest power of two in 16..128 not above it (None:
    64).

    >>> [tile_size(c) for c in (None, 1, 37, 64, 100, 1000)]
    [64, 16, 32, 64, 64, 128]
    """
    if chunk is None:
        return 64
    return max([t for t in TILES if t <= chunk] or [TILES[0]])


def triton_usable(device: torch.device) -> bool:
    """Whether the Triton kernels can run on `device` (CUDA, or any device under the interpreter)."""
    if importlib.util.find_spec("triton") is None:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def pick_backend(backend: str, device: torch.device, top_k: int = 0, sinks: bool = False) -> str:
    if backend == "auto":
        opted_in = os.environ.get(OPT_IN) == "1"
        fused = opted_in and device.type == "cuda" and triton_usable(device) and not (top_k or sinks)
        return "triton" if fused else "torch"
    if backend not in BACKENDS:
        raise InterpError(f"unknown stats backend {backend!r}; choose one of {sorted(BACKENDS)} or 'auto'.")
    if backend == "triton" and not triton_usable(device):
        raise InterpError(
            "the triton backend needs `pip install triton` and a CUDA device (or TRITON_INTERPRET=1 for the "
            "slow CPU interpreter); use backend='torch'."
        )
    return backend


def all_stats(
    query: Query,
    key: Key,
    attention_mask: Tensor | None,
    *,
    scaling: float,
    is_causal: bool,
    softcap: float | None = None,
    spans: Spans = (),
    top_k: int = 0,
    columns: bool = False,
    value: Value | None = None,
    chunk: int | None = None,
    backend: str = "auto",
    sinks: Tensor | None = None,
    workspace: Workspace | None = None,
) -> Result:
    """Row statistics, column statistics (if `columns`) and the attention output (if `value`).

    `chunk` is the query rows per step (torch) or the tile size (triton). `sinks` are learned per-head
    sink logits (gpt-oss): an extra softmax column that takes mass but is not a key. `workspace` keeps
    the torch path's scratch buffers for the next call. Memory: O(rows) stored.
    """
    name = pick_backend(backend, query.device, top_k, sinks is not None)
    return BACKENDS[name](query, key, value, attention_mask, scaling=scaling, is_causal=is_causal,
                          softcap=softcap, spans=spans, top_k=top_k, columns=columns, chunk=chunk,
                          sinks=sinks, workspace=workspace)


def attention_stats(query: Query, key: Key, attention_mask: Tensor | None, **kwargs) -> RowStats:
    """Per (batch, head, query) row: lse, max score + argmax key, entropy, span mass, top-k keys.

    Keyword arguments as `all_stats`: scaling, is_causal, softcap, spans, top_k, chunk, backend.
    """
    return all_stats(query, key, attention_mask, **kwargs)[0]


@torch.no_grad()
def column_stats(
    query: Query,
    key: Key,
    attention_mask: Tensor | None,
    lse: Tensor,
    *,
    scaling: float,
    is_causal: bool,
    softcap: float | None = None,
    chunk: int | None = None,
    backend: str = "auto",
) -> ColumnStats:
    """Per (batch, head, key): attention received from the queries that see the key, given row `lse`."""
    name = pick_backend(backend, query.device)
    if name == "triton":
        from interp.kernels import triton_stats  # lazy: optional dependency (triton)

        return triton_stats.column_stats(query, key, attention_mask, lse, scaling=scaling,
                                         is_causal=is_causal, softcap=softcap, block=tile_size(chunk))
    return reference.columns_from_lse(query, key, attention_mask, lse, scaling=scaling, is_causal=is_causal,
                                      softcap=softcap, chunk=chunk)


__all__ = [
    "BACKENDS",
    "ColumnStats",
    "RowStats",
    "Spans",
    "Workspace",
    "all_stats",
    "attention_stats",
    "column_stats",
    "pick_backend",
    "span_bounds",
    "tile_size",
    "triton_usable",
]
