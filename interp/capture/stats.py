"""`Stats`: streaming per-head attention statistics of every layer, without storing a pattern.

For each wanted layer it hands the `AttentionCall`'s query/key/mask to `interp.kernels` and keeps
per (batch, head, query) row the log-sum-exp, max score and its argmax key, entropy, mass on
requested key spans and top-k keys, and per (batch, head, key) the total and mean attention the key
receives from the queries that see it. Exact (fp32), O(rows) stored.

    >>> st = Stats(spans=[(0, 1)], first_tokens=1, top_k=4)              # doctest: +SKIP
    >>> with interp.capture(m, probes=[st]):                             # doctest: +SKIP
    ...     m(**m.encode(long_prompts))
    >>> st.rows[5].entropy.shape, st.columns[5].mean.shape               # doctest: +SKIP
    (torch.Size([2, 9, 4096]), torch.Size([2, 9, 4096]))

`spans` are padded key positions shared by the batch (or a `[batch, span, 2]` tensor);
`first_tokens=k` adds one more span per prompt: its first `k` real tokens (left padding moves
them). Generation: rows of every decoding step concatenate on `query`; column totals add up over
steps on the absolute key axis. Memory: about `(20 + 4 spans + 12 top_k)` bytes per row plus the
kernels' transient `3 x batch x head x chunk x key x 4` bytes (`max_memory` bounds it).
Weight editors (ablation, calibration) are not reflected: the statistics describe the model's own
scores; record `Patterns` for edited heads.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from interp.axes import HeadOutput
from interp.capture.budget import chunk_rows
from interp.capture.call import AttentionCall
from interp.capture.probe import Probe
from interp.errors import InterpError
from interp.kernels import all_stats
from interp.kernels.results import ColumnStats, RowStats
from interp.kernels.spans import Spans, span_bounds
from interp.kernels.workspace import Workspace


@dataclass
class Stats(Probe):
    """Record attention statistics for `layers` (None = all) of one stack."""

    layers: Sequence[int] | None = None
    spans: Spans = ()
    first_tokens: int = 0
    top_k: int = 0
    with_columns: bool = True
    stack: str | None = None
    backend: str = "auto"
    max_memory: int | str | None = None
    device: torch.device | str | None = None
    fuse_output: bool = True  # compute the layer's output in the same pass (skips SDPA for these layers)
    # (stack, layer) -> [(RowStats, ColumnStats, key_offset)]
    steps: dict = field(init=False, repr=False, default_factory=dict)

    def begin(self, model) -> None:
        adapter = model.adapter
        self.stack = self.stack or adapter.main_stack
        if self.layers is not None:
            self.layers = [adapter.check_layer(layer, self.stack) for layer in self.layers]
        if self.first_tokens < 0 or self.top_k < 0:
            raise InterpError("Stats(first_tokens=..., top_k=...) must be >= 0.")
        self.steps = {}
        self._first = None
        self._done = None
        self._workspace = Workspace()  # scratch buffers shared by this session's layers and steps

    def end(self) -> None:
        self._workspace = None

    def wants(self, stack: str, layer: int) -> bool:
        return stack == self.stack and (self.layers is None or layer in self.layers)

    @torch.no_grad()
    def attention_output(self, call: AttentionCall) -> HeadOutput | None:
        """The layer's output from the same pass as the statistics (no separate SDPA call)."""
        if not self.fuse_output:
            return None
        rows, cols, out = self._compute(call, value=call.value)
        self._done = (call, rows, cols)
        return out

    @torch.no_grad()
    def record(self, call: AttentionCall, z: HeadOutput) -> None:
        if self._done is not None and self._done[0] is call:
            _, rows, cols = self._done
            self._done = None
        else:
            rows, cols, _ = self._compute(call)
        if self.device is not None:
            rows = rows.to(self.device)
            cols = cols.to(self.device) if cols is not None else None
        self.steps.setdefault((call.stack, call.layer), []).append((rows, cols, call.key_offset))

    def _compute(self, call: AttentionCall, value=None):
        chunk = chunk_rows(self.max_memory, batch=call.batch, heads=call.n_heads, k_len=call.k_len)
        return all_stats(
            call.query, call.key, effective_mask(call), scaling=call.scaling, is_causal=call.is_causal,
            softcap=call.softcap, spans=self._spans(call), top_k=self.top_k, columns=self.with_columns,
            value=value, chunk=chunk, backend=self.backend, sinks=call.sinks, workspace=self._workspace,
        )

    def _spans(self, call: AttentionCall) -> Spans:
        if not self.first_tokens:
            return self.spans
        bounds = span_bounds(self.spans, batch=call.batch, k_len=call.k_len, device=call.query.device)
        if call.q_len > 1 or self._first is None:  # prefill; decoding steps reuse its answer
            self._first = _first_real_key(call)
        sink = torch.stack([self._first, self._first + self.first_tokens], -1)[:, None]
        return torch.cat([bounds, sink.clamp(max=call.k_len)], dim=1)

    @property
    def rows(self) -> dict:
        """`{layer: RowStats}` with the rows of every forward pass concatenated on `query`."""
        return {self._name(k): RowStats.cat([r for r, _, _ in v]) for k, v in self.steps.items()}

    @property
    def columns(self) -> dict:
        """`{layer: ColumnStats}` summed over forward passes on the absolute key axis."""
        out = {}
        for k, v in self.steps.items():
            if v[0][1] is None:
                continue
            width = max(off + c.total.shape[-1] for _, c, off in v)
            total = torch.zeros(*v[0][1].total.shape[:2], width, device=v[0][1].total.device)
            count = torch.zeros(v[0][1].count.shape[0], width, dtype=torch.long, device=total.device)
            for _, c, off in v:
                total[..., off:off + c.total.shape[-1]] += c.total
                count[..., off:off + c.count.shape[-1]] += c.count
            out[self._name(k)] = ColumnStats(total, count)
        return out

    def _name(self, key: tuple[str, int]):
        return key[1] if key[0] == self.stack else key


def _first_real_key(call: AttentionCall) -> Tensor:
    """Each prompt's first real (non-padding) key: the first new position whose query sees itself."""
    mask = call.attention_mask
    offset = call.k_len - call.q_len
    if mask is None:  # no padding
        return torch.zeros(call.batch, dtype=torch.long, device=call.query.device)
    diag = torch.diagonal(mask[:, 0, :, : call.k_len], offset=offset, dim1=-2, dim2=-1)  # [batch, query]
    seen = diag if diag.dtype == torch.bool else diag > torch.finfo(diag.dtype).min / 2
    return offset + seen.int().argmax(-1)


def effective_mask(call: AttentionCall) -> Tensor | None:
    """The mask with T5-style `position_bias` folded in as an additive float mask."""
    if call.position_bias is None:
        return call.attention_mask
    bias = call.position_bias.float()
    mask = call.attention_mask
    if mask is None:
        return bias
    if mask.dtype == torch.bool:
        mask = torch.where(mask, 0.0, torch.finfo(torch.float32).min)
    return torch.maximum(mask.float() + bias, torch.tensor(torch.finfo(torch.float32).min))
