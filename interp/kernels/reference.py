"""Exact attention statistics in plain torch, a chunk of query rows at a time (CPU and GPU).

For each chunk of query rows it computes the fp32 scores `[batch, head, chunk, key]` exactly as
eager attention does (scaling, softcap, additive bias, mask), turns them into probabilities and
reduces them to row statistics (`RowStats`) and column sums (`ColumnStats`). The scores of one
chunk are the only large tensor alive, so memory is O(rows) stored + O(chunk x key) transient.
Given `value`, the same probabilities also produce the attention output (a fused eager pass).

Memory: about `3 x batch x head x chunk x key x 4` bytes transient; `rows_per_chunk` picks the
chunk for a budget (default 256 MiB).

    >>> import torch
    >>> q, k = torch.randn(2, 4, 6, 8), torch.randn(2, 2, 6, 8)    # GQA: 4 query heads, 2 kv heads
    >>> rows, cols, _ = stats(q, k, None, scaling=0.35, is_causal=True, spans=[(0, 1)], columns=True)
    >>> rows.span_mass[0, 0, 0, 0].item()   # query 0 sees only key 0
    1.0
    >>> cols.count[0].tolist()              # key j is seen by queries j..5
    [6, 5, 4, 3, 2, 1]
"""

import torch
from jaxtyping import Float
from torch import Tensor

from interp.axes import HeadOutput, Key, Query, Value
from interp.capture.masks import additive_bias, visible_keys
from interp.errors import InterpError
from interp.kernels.results import ColumnStats, RowStats
from interp.kernels.spans import Spans, span_bounds, span_indicator

DEFAULT_TRANSIENT_BYTES = 256 * 2**20


MAX_CHUNK = 256  # smaller chunks follow the causal triangle closer (less work) and stay in cache


def rows_per_chunk(batch: int, heads: int, k_len: int, budget_bytes: int = DEFAULT_TRANSIENT_BYTES) -> int:
    """Query rows per chunk: at most `MAX_CHUNK`, and the ~3 fp32 `[batch, head, chunk, key]` buffers fit."""
    return max(1, min(MAX_CHUNK, budget_bytes // (3 * 4 * batch * heads * max(k_len, 1))))


def check_shapes(query: Tensor, key: Tensor, value: Tensor | None = None) -> None:
    """Raise a clear error unless `query [b, h, q, d]` and `key [b, kv, k, d]` fit together (GQA)."""
    if query.ndim != 4 or key.ndim != 4:
        raise InterpError(
            f"expected query [batch, head, query, d_head] and key [batch, kv_head, key, d_head]; got shapes "
            f"{tuple(query.shape)} and {tuple(key.shape)}."
        )
    b, h, _, d = query.shape
    if key.shape[0] != b or key.shape[3] != d or h % key.shape[1]:
        raise InterpError(
            f"query {tuple(query.shape)} and key {tuple(key.shape)} disagree: batch and d_head must match and "
            "the number of query heads must be a multiple of the number of kv heads."
        )
    if value is not None and value.shape[:3] != key.shape[:3]:
        raise InterpError(f"value {tuple(value.shape)} must match key {tuple(key.shape)} on batch, kv_head, key.")


def chunk_scores(
    query: Query,
    key_f32: Float[Tensor, "batch kv_head key d_head"],
    attention_mask: Tensor | None,
    rows: slice,
    *,
    scaling: float,
    is_causal: bool,
    softcap: float | None,
) -> tuple[Float[Tensor, "batch head query key"], Tensor]:
    """fp32 scores of the query rows `rows`, hidden keys at the dtype's minimum, and the visibility."""
    b, h, q_len, d = query.shape
    kv, k_len = key_f32.shape[1], key_f32.shape[2]
    q = query[:, :, rows].float()
    c = q.shape[2]
    # GQA without copying keys: group query heads under their kv head.
    s = torch.matmul(q.reshape(b, kv, (h // kv) * c, d), key_f32.transpose(-1, -2)).reshape(b, h, c, k_len)
    s.mul_(scaling)
    if softcap is not None:
        s.div_(softcap).tanh_().mul_(softcap)
    bias = additive_bias(attention_mask, rows)
    if bias is not None:
        s.add_(bias[..., :k_len].float())
    visible = visible_keys(
        attention_mask, batch=b, q_len=q_len, k_len=k_len, is_causal=is_causal, rows=rows, device=query.device
    )
    s.masked_fill_(~visible[:, None], torch.finfo(torch.float32).min)
    return s, visible


@torch.no_grad()
def stats(
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
    sinks: Tensor | None = None,
) -> tuple[RowStats, ColumnStats | None, HeadOutput | None]:
    """Row statistics, optional column statistics and optional attention output, in one pass.

    Args mirror transformers' attention functions: `attention_mask` is None, a boolean
    `[batch, 1, query, key]` (True = visible) or an additive float mask; `softcap` is Gemma-2's
    logit soft-capping. `spans` are key ranges whose mass to report (see `interp.kernels.spans`);
    `top_k` asks for the k most attended keys per row; `value` adds the output `[batch, query,
    head, d_head]` in `value`'s dtype; `chunk` is the number of query rows per step.
    """
    check_shapes(query, key, value)
    if top_k < 0:
        raise InterpError(f"top_k must be >= 0, got {top_k}.")
    b, h, q_len, _ = query.shape
    kv, k_len = key.shape[1], key.shape[2]
    dev = query.device
    chunk = chunk or rows_per_chunk(b, h, k_len)
    key_f32 = key.float()
    value_f32 = value.float() if value is not None else None
    inside = span_indicator(span_bounds(spans, batch=b, k_len=k_len, device=dev), k_len)  # [b, span, key]
    n_spans, k_eff = inside.shape[1], min(top_k, k_len)

    f32 = dict(dtype=torch.float32, device=dev)
    lse, max_score, entropy = (torch.empty(b, h, q_len, **f32) for _ in range(3))
    argmax = torch.empty(b, h, q_len, dtype=torch.long, device=dev)
    span_mass = torch.empty(b, h, q_len, n_spans, **f32)
    topk_index = torch.full((b, h, q_len, top_k), -1, dtype=torch.long, device=dev)
    topk_prob = torch.zeros(b, h, q_len, top_k, **f32)
    n_visible = torch.empty(b, q_len, dtype=torch.long, device=dev)
    col_total = torch.zeros(b, h, k_len, **f32) if columns else None
    col_count = torch.zeros(b, k_len, dtype=torch.long, device=dev) if columns else None
    out = torch.empty(b, q_len, h, value.shape[-1], dtype=value.dtype, device=dev) if value is not None else None
    sink = sinks.float().view(1, h, 1).to(dev) if sinks is not None else None  # [1, head, 1] logits

    for start in range(0, q_len, chunk):
        rows = slice(start, min(start + chunk, q_len))
        # A causal query never sees keys past its own position, so these rows need only the keys up to
        # the last row's: about half the work of the full [query, key] square over a whole prompt.
        k_end = k_len - q_len + rows.stop if is_causal else k_len
        s, visible = chunk_scores(
            query, key_f32[:, :, :k_end], attention_mask, rows, scaling=scaling, is_causal=is_causal,
            softcap=softcap,
        )
        n_vis = visible.sum(-1)  # [b, c]
        empty = (n_vis == 0)[:, None]  # [b, 1, c]
        m, arg = s.max(-1)
        if k_eff:
            top_s, top_i = s.topk(k_eff, dim=-1)
        shift = m if sink is None else torch.maximum(m, sink)
        s.sub_(shift[..., None])  # shifted scores t <= 0; hidden keys stay hugely negative
        e = torch.exp(s)
        l_keys = e.sum(-1)
        # sum_j e_j * t_j without another [b, h, c, key] buffer (einsum is ~2x a batched 1 x key @ key x 1 bmm).
        et = torch.einsum("bhck,bhck->bhc", e, s)
        # A learned sink is one more softmax column that is not a key: it takes mass, so keys sum to < 1.
        l = l_keys if sink is None else l_keys + torch.exp(sink - shift)
        inv_l = torch.where(empty, 0.0, 1.0 / l)
        row_lse = shift + torch.log(l)

        lse[:, :, rows] = torch.where(empty, 0.0, row_lse)
        max_score[:, :, rows] = torch.where(empty, 0.0, m)
        argmax[:, :, rows] = torch.where(empty, -1, arg)
        # entropy of the keys' probabilities p_j = e_j / l:  sum_j p_j (log l - t_j)
        entropy[:, :, rows] = torch.where(empty, 0.0, l_keys * inv_l * torch.log(l) - et * inv_l)
        n_visible[:, rows] = n_vis
        p = e.mul_(inv_l[..., None])  # probabilities; all-zero rows for queries that see nothing
        if n_spans:
            span_mass[:, :, rows] = torch.matmul(
                p.reshape(b, h * p.shape[2], k_end), inside[:, :, :k_end].transpose(1, 2)
            ).reshape(b, h, -1, n_spans)
        if k_eff:
            rank_ok = torch.arange(k_eff, device=dev) < n_vis[:, None, :, None]
            top_p = torch.exp(top_s - row_lse[..., None])
            topk_index[:, :, rows, :k_eff] = torch.where(rank_ok, top_i, -1)
            topk_prob[:, :, rows, :k_eff] = torch.where(rank_ok, top_p, 0.0)
        if columns:
            col_total[..., :k_end] += p.sum(2)
            col_count[..., :k_end] += visible.sum(1)
        if value is not None:
            c = p.shape[2]
            o = torch.matmul(p.reshape(b, kv, -1, k_end), value_f32[:, :, :k_end]).reshape(b, h, c, -1)
            out[:, rows] = o.transpose(1, 2).to(value.dtype)
        del s, e, p

    rows_out = RowStats(lse, max_score, argmax, entropy, span_mass, topk_index, topk_prob, n_visible)
    cols_out = ColumnStats(col_total, col_count) if columns else None
    return rows_out, cols_out, out


@torch.no_grad()
def columns_from_lse(
    query: Query,
    key: Key,
    attention_mask: Tensor | None,
    lse: Float[Tensor, "batch head query"],
    *,
    scaling: float,
    is_causal: bool,
    softcap: float | None = None,
    chunk: int | None = None,
) -> ColumnStats:
    """Column statistics from known row log-sum-exps: `total_k = sum_i exp(s_ik - lse_i)` (second pass)."""
    check_shapes(query, key)
    b, h, q_len, _ = query.shape
    k_len = key.shape[2]
    chunk = chunk or rows_per_chunk(b, h, k_len)
    key_f32 = key.float()
    total = torch.zeros(b, h, k_len, dtype=torch.float32, device=query.device)
    count = torch.zeros(b, k_len, dtype=torch.long, device=query.device)
    for start in range(0, q_len, chunk):
        rows = slice(start, min(start + chunk, q_len))
        s, visible = chunk_scores(
            query, key_f32, attention_mask, rows, scaling=scaling, is_causal=is_causal, softcap=softcap
        )
        total += s.sub_(lse[:, :, rows, None].float()).exp_().mul_(visible[:, None]).sum(2)
        count += visible.sum(1)
    return ColumnStats(total, count)
