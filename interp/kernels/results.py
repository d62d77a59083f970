"""What the streaming kernels return: per-row and per-column attention statistics.

A *row* is one (batch, head, query) softmax; a *column* is one (batch, head, key) and collects the
attention that key receives. Both are tiny next to the pattern they summarise: at 8k tokens one
layer's rows take `batch x head x 8192` floats where the pattern would take `x 8192` more.

Rows that see no key at all (queries at left-padding positions) have no softmax. They get finite,
fixed values so downstream means never turn into NaN: `lse = 0`, `max_score = 0`, `argmax = -1`,
`entropy = 0`, `span_mass = 0`, `topk_index = -1`, `topk_prob = 0`, and `n_visible = 0` tells them
apart. Filter them with `stats.n_visible > 0`.

Example:
    >>> import torch
    >>> from interp.kernels import attention_stats
    >>> q, k = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    >>> rows = attention_stats(q, k, None, scaling=8 ** -0.5, is_causal=True)
    >>> rows.argmax[0, 0, 0].item()  # the first query can only see the first key
    0
"""

from dataclasses import dataclass, fields

import torch
from jaxtyping import Float, Int
from torch import Tensor


@dataclass
class RowStats:
    """Exact per-row statistics of softmax attention (fp32).

    Attributes:
        lse: log-sum-exp of the visible scores (the softmax normaliser, in log space).
        max_score: the largest visible score (after scaling, softcap and additive bias).
        argmax: the key holding `max_score` (first one on ties); -1 for rows that see nothing.
        entropy: `-sum p log p` in nats.
        span_mass: attention mass on each requested key span `[start, stop)`.
        topk_index, topk_prob: the `k` most attended keys (descending); -1 / 0 past the visible ones.
        n_visible: how many keys each query sees (head-independent).
    """

    lse: Float[Tensor, "batch head query"]
    max_score: Float[Tensor, "batch head query"]
    argmax: Int[Tensor, "batch head query"]
    entropy: Float[Tensor, "batch head query"]
    span_mass: Float[Tensor, "batch head query span"]
    topk_index: Int[Tensor, "batch head query k"]
    topk_prob: Float[Tensor, "batch head query k"]
    n_visible: Int[Tensor, "batch query"]

    def to(self, device: torch.device | str) -> "RowStats":
        return RowStats(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @staticmethod
    def cat(parts: list["RowStats"], dim: str = "query") -> "RowStats":
        """Concatenate along `query` (decoding steps) or `batch` (prompt shards)."""
        out = {}
        for f in fields(RowStats):
            axis = 1 if (dim == "query" and f.name == "n_visible") else {"batch": 0, "query": 2}[dim]
            out[f.name] = torch.cat([getattr(p, f.name) for p in parts], dim=axis)
        return RowStats(**out)


@dataclass
class ColumnStats:
    """Attention each key receives, summed over the queries that can see it (fp32).

    `mean` is Gu et al.'s key importance `sum_{t>=k} A[t, k] / (T - k + 1)` for a causal prompt
    without padding, and ACT's column mean; it generalises to padding and KV caches by dividing by
    the number of queries that actually see the key (`count`). Keys nobody sees get `mean = 0`.
    """

    total: Float[Tensor, "batch head key"]
    count: Int[Tensor, "batch key"]

    @property
    def mean(self) -> Float[Tensor, "batch head key"]:
        return self.total / self.count.clamp(min=1)[:, None, :].to(self.total.dtype)

    def to(self, device: torch.device | str) -> "ColumnStats":
        return ColumnStats(self.total.to(device), self.count.to(device))
