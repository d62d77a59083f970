"""Memory budgets: parse "2GB", size what a capture will store, pick chunk sizes, refuse early.

A capture with `max_memory` checks, before the first layer runs, how much its recorders will
keep. Full patterns grow as `layers x batch x head x query x key x 4` bytes, which outgrows any
machine at long context (SmolLM2, 8k tokens: ~72 GB); such a request fails at once with the size
it would need and a pointer to the streaming `Stats` recorder, whose footprint is O(rows).
The same budget sets how many query rows the statistics kernels process at a time.

    >>> parse_bytes("2GB"), parse_bytes("512 MiB"), parse_bytes(1000)
    (2000000000, 536870912, 1000)
    >>> round(pattern_bytes(layers=30, heads=9, batch=1, q_len=8192, k_len=8192) / 1e9, 1)
    72.5
"""

import re

import torch

from interp.capture.probe import Probe, cached_tokens
from interp.capture.recorders import Patterns
from interp.errors import InterpError, MemoryBudgetError
from interp.kernels.reference import rows_per_chunk

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(size: int | float | str) -> int:
    """`2GB` (SI), `1.5 GiB` (binary), or a plain number of bytes.

    Kept beside accelerate's `convert_file_size_to_int`, which reads `"2gb"` as gigabits (2.5e8 bytes)
    and refuses `"1000"` and `"1TB"`.
    """
    if isinstance(size, (int, float)) and not isinstance(size, bool):
        if size <= 0:
            raise InterpError(f"a memory budget must be positive, got {size}.")
        return int(size)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(size))
    if match is None or match.group(2).lower() not in _UNITS:
        raise InterpError(f"cannot read memory size {size!r}; write it like '2GB', '512MiB' or 1_000_000 "
                          "(bytes).")
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if value <= 0:
        raise InterpError(f"a memory budget must be positive, got {size!r}.")
    return int(value)


def human(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n_bytes < 1000 or unit == "TB":
            return f"{n_bytes:.1f} {unit}" if unit != "B" else f"{int(n_bytes)} B"
        n_bytes /= 1000


def pattern_bytes(*, layers: int, heads: int, batch: int, q_len: int, k_len: int, itemsize: int = 4) -> int:
    """Bytes that full attention patterns of `layers x heads` take."""
    return layers * heads * batch * q_len * k_len * itemsize


def stats_bytes(*, layers: int, heads: int, batch: int, q_len: int, k_len: int, n_spans: int = 0,
                top_k: int = 0, columns: bool = True) -> int:
    """Bytes the `Stats` recorder stores: ~4 floats + 1 long per row, spans, top-k and columns."""
    rows = layers * heads * batch * q_len
    per_row = 4 * 3 + 8 + 4 * n_spans + 12 * top_k
    return rows * per_row + (layers * heads * batch * k_len * 4 + layers * batch * k_len * 8 if columns
                             else 0)


def check_patterns_fit(budget: int | str, *, layers: int, heads: int, batch: int, q_len: int, k_len: int,
                       itemsize: int = 4) -> None:
    """Raise `MemoryBudgetError` (before anything runs) when the requested patterns exceed `budget`."""
    limit = parse_bytes(budget)
    need = pattern_bytes(layers=layers, heads=heads, batch=batch, q_len=q_len, k_len=k_len, itemsize=itemsize)
    if need > limit:
        stats = stats_bytes(layers=layers, heads=heads, batch=batch, q_len=q_len, k_len=k_len)
        raise MemoryBudgetError(
            f"full attention patterns for {layers} layers x {heads} heads x batch {batch} x {q_len} queries "
            f"x {k_len} keys need {human(need)}, over the budget of {human(limit)}. Record fewer "
            "layers/heads/query rows (Patterns(layers=..., heads=..., queries=...)), or use the streaming "
            "Stats recorder (lse, entropy, argmax, span mass, top-k, column means) which needs about "
            f"{human(stats)}."
        )


def chunk_rows(budget: int | str | None, *, batch: int, heads: int, k_len: int,
               reserve: int = 0) -> int | None:
    """Query rows per kernel chunk so the transient scores fit `budget - reserve` (None: kernel default)."""
    if budget is None:
        return None
    free = parse_bytes(budget) - reserve
    need_one = 3 * 4 * batch * heads * k_len  # the kernels' fp32 scratch for one query row
    if free < need_one:
        raise MemoryBudgetError(
            f"a budget of {human(parse_bytes(budget))} leaves {human(max(free, 0))} for attention "
            f"statistics, but one query row of {heads} heads x {k_len} keys x batch {batch} needs "
            f"{human(need_one)}; raise max_memory or split the batch."
        )
    return rows_per_chunk(batch, heads, k_len, budget_bytes=free)


class MemoryBudget(Probe):
    """Checks, before each forward pass runs, that the `Patterns` recorders in `probes` fit `max_memory`.

    It also hands the budget to `Stats` recorders (chunk sizes). The capture engine adds one when
    given `max_memory`; by hand: `capture(m, probes=[pat, MemoryBudget("2GB", [pat])])`.
    """

    def __init__(self, max_memory: int | str, probes):
        self.limit = parse_bytes(max_memory)
        self.probes = list(probes)
        self._lent: list = []

    def begin(self, model) -> None:
        """Lend the budget to probes without one (taken back at `end`, so a reused probe starts clean)."""
        self._lent = [p for p in self.probes if hasattr(p, "max_memory") and p.max_memory is None]
        for probe in self._lent:
            probe.max_memory = self.limit

    def end(self) -> None:
        for probe in self._lent:
            probe.max_memory = None
        self._lent = []

    def module_hooks(self, model):
        adapter = model.adapter

        def check(module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args and torch.is_tensor(args[0]) else None)
            if ids is None:
                ids = kwargs.get("inputs_embeds")
            if ids is None:
                return
            batch, n_new = ids.shape[0], ids.shape[1]
            past = cached_tokens(kwargs)
            for probe in self.probes:
                if isinstance(probe, Patterns):
                    self._check(probe, adapter, batch, n_new, past + n_new)

        return [(model.hf, "pre", check)]

    def _check(self, probe, adapter, batch: int, q_len: int, k_len: int) -> None:
        stack = probe.stack or adapter.main_stack
        layers = len(probe.layers) if probe.layers is not None else adapter.n_layers(stack)
        heads = len(probe.heads) if probe.heads is not None else adapter.n_heads
        rows = q_len
        if probe.queries is not None and past_free(q_len, k_len):
            rows = len(range(q_len)[probe.queries]) if isinstance(probe.queries, slice) else (
                1 if isinstance(probe.queries, int) else len(probe.queries))
        itemsize = (probe.dtype or torch.float32).itemsize
        stored = sum(t.numel() * t.element_size() for layer in probe.data for t in probe.data.steps(layer))
        remaining = max(self.limit - stored, 1)  # what earlier passes of this capture left over
        check_patterns_fit(remaining, layers=layers, heads=heads, batch=batch, q_len=rows, k_len=k_len,
                           itemsize=itemsize)

def past_free(q_len: int, k_len: int) -> bool:
    """A prefill pass (no cached keys before it): `Patterns.queries` selects its rows."""
    return q_len == k_len
