"""Exact attention statistics in plain torch, a chunk of query rows at a time (CPU and GPU).

For each chunk of query rows it computes the fp32 scores `[batch, head, chunk, key]` exactly as
eager attention does (scaling, softcap, additive bias, mask), turns them into probabilities and
reduces them to row statistics (`RowStats`) and column sums (`ColumnStats`). The scores of one
chunk are the only large tensor alive, so memory is O(rows) stored + O(chunk x key) transient.
Given `value`, the same probabilities also produce the attention output (a fused eager pass).

Memory: about `3 x batch x head x chunk x key x 4` bytes transient, plus fp32 copies of the queries
and of the keys (and values) per query head, all kept in a reusable `Workspace`; `rows_per_chunk`
picks the chunk for a budget (default 256 MiB).

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
from interp.errors import InterpError
from interp.kernels.results import ColumnStats, RowStats
from interp.kernels.spans import Spans, span_bounds, span_indicator
from interp.kernels.workspace import Workspace
from interp.masks import additive_bias, visible_keys

DEFAULT_TRANSIENT_BYTES = 256 * 2**20


MAX_CHUNK = 128  # smaller chunks follow the causal triangle closer (less work) and stay in cache


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
            f"query {tuple(query.shape)} and key {tuple(key.shape)} disagree: batch and d_head must match "
            "and the number of query heads must be a multiple of the number of kv heads."
        )
    if value is not None and value.shape[:3] != key.shape[:3]:
        raise InterpError(f"value {tuple(value.shape)} must match key {tuple(key.shape)} on batch, kv_head, "
                          "key.")


def chunk_scores(
    query: Query,
    key_t: Float[Tensor, "batch kv_head d_head key"],
    attention_mask: Tensor | None,
    rows: slice,
    *,
    scaling: float,
    is_causal: bool,
    softcap: float | None,
    workspace: Tensor | None = None,
    triangle: Tensor | None = None,
) -> tuple[Float[Tensor, "batch head query key"], Tensor | None]:
    """fp32 scores of the query rows `rows` (hidden keys at about float32's minimum) and the visibility
    `[batch, query, key]`.

    `key_t`: fp32 keys, transposed and contiguous (a `[d_head, key]` matrix per head multiplies ~20%
    faster on CPU than a transposed view), one per kv head or one per query head.

    `workspace`: a flat fp32 buffer of at least `batch x head x rows x key` to write the scores into
    (reusing one buffer across chunks avoids an allocation per chunk and the fragmentation it brings).
    `triangle`: for a plain causal prompt (no mask, queries at the end of the keys, keys cut at the last
    row's position) the `[rows, rows]` bias of the diagonal block, see `causal_triangle`; visibility
    is then implied and returned as None.
    """
    b, h, q_len, d = query.shape
    kv, k_len = key_t.shape[1], key_t.shape[3]
    q = query[:, :, rows]
    if q.dtype != torch.float32 or scaling != 1.0:
        q = q.float() * scaling  # scaling the queries: one pass over [chunk, d], not [chunk, key]
    c = q.shape[2]
    # GQA: query heads grouped under their kv head (`key_t` may also hold one copy per query head).
    out = None if workspace is None else workspace[: b * h * c * k_len].view(b, kv, (h // kv) * c, k_len)
    s = torch.matmul(q.reshape(b, kv, (h // kv) * c, d), key_t, out=out).view(b, h, c, k_len)
    if softcap is not None:
        s.div_(softcap).tanh_().mul_(softcap)
    if triangle is not None:  # plain causal: only the diagonal block hides keys, always the same way
        s[..., k_len - c :].add_(triangle[:c, :c])
        return s, None
    bias = additive_bias(attention_mask, rows)
    if bias is not None:
        s.add_(bias[..., :k_len].float())
    visible = visible_keys(
        attention_mask, batch=b, q_len=q_len, k_len=k_len, is_causal=is_causal, rows=rows, device=query.device
    )
    hidden = ~visible
    cols = hidden.any(1).any(0).nonzero()
    lo = int(cols[0]) if cols.numel() else k_len  # first key some row cannot see (causal: the diagonal block)
    if lo < k_len:  # adding a [batch, 1, chunk, key] bias is ~4x faster than a broadcast masked_fill_
        hide = torch.zeros(hidden[:, None, :, lo:].shape, dtype=torch.float32, device=s.device)
        s[..., lo:].add_(hide.masked_fill_(hidden[:, None, :, lo:], torch.finfo(torch.float32).min))
    return s, visible


def causal_triangle(size: int, device) -> Float[Tensor, "query key"]:
    """Additive bias of a causal diagonal block: 0 on and below the diagonal, float32's minimum above."""
    return torch.full((size, size), torch.finfo(torch.float32).min, device=device).triu_(1)


def row_max(s: Float[Tensor, "... key"], block: int = 64) -> tuple[Tensor, Tensor]:
    """(max, first argmax) over the last axis, like `s.max(-1)` but ~5x faster on CPU for long rows.

    torch's max-with-indices and argmax are far slower than `amax` on CPU, so: block maxima with
    `amax`, the winning block by a small `max`, then the first equal entry inside that block.
    """
    k = s.shape[-1]
    n_blocks = k // block
    if n_blocks < 4:
        return s.max(-1)
    maxima = s[..., : n_blocks * block].unflatten(-1, (n_blocks, block)).amax(-1)
    if n_blocks * block < k:
        maxima = torch.cat([maxima, s[..., n_blocks * block :].amax(-1, keepdim=True)], -1)
    m, best = maxima.max(-1)  # the first block holding the maximum
    if n_blocks * block == k:  # the winning block through a block view: no [..., block] index tensor
        blocks = s.unflatten(-1, (n_blocks, block))
        winner = blocks.gather(-2, best[..., None, None].expand(*best.shape, 1, block))[..., 0, :]
    else:
        index = (best[..., None] * block + torch.arange(block, device=s.device)).clamp_max(k - 1)
        winner = s.gather(-1, index)
    inside = (winner == m[..., None]).to(torch.uint8).argmax(-1)  # first equal entry
    return m, best * block + inside


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
    workspace: Workspace | None = None,
) -> tuple[RowStats, ColumnStats | None, HeadOutput | None]:
    """Row statistics, optional column statistics and optional attention output, in one pass.

    Args mirror transformers' attention functions: `attention_mask` is None, a boolean
    `[batch, 1, query, key]` (True = visible) or an additive float mask; `softcap` is Gemma-2's
    logit soft-capping. `spans` are key ranges whose mass to report (see `interp.kernels.spans`);
    `top_k` asks for the k most attended keys per row; `value` adds the output `[batch, query,
    head, d_head]` in `value`'s dtype; `chunk` is the number of query rows per step; `workspace`
    keeps the transient buffers for the next call (see `interp.kernels.workspace`).
    """
    check_shapes(query, key, value)
    if top_k < 0:
        raise InterpError(f"top_k must be >= 0, got {top_k}.")
    b, h, q_len, _ = query.shape
    kv, k_len = key.shape[1], key.shape[2]
    dev = query.device
    chunk = chunk or rows_per_chunk(b, h, k_len)
    ws = workspace or Workspace()
    # One fp32 key / value copy per query head: a batched matmul over kv heads alone (3 for SmolLM2)
    # splits badly over CPU threads (measured: slower on 2 threads than on 1); per head it scales.
    def per_head(name: str, x: Tensor) -> Tensor:  # [batch, kv, *rest] -> [batch, head, *rest], fp32
        copy = ws.take(name, b * h * x[0, 0].numel(), dev).view(b, kv, h // kv, *x.shape[2:])
        return copy.copy_(x[:, :, None]).flatten(1, 2)

    key_t = per_head("key", key.transpose(-1, -2))  # [batch, head, d_head, key]
    q_scaled = ws.take("query", query.numel(), dev).view(query.shape).copy_(query).mul_(scaling)  # fp32
    value_f32 = per_head("value", value) if value is not None else None
    bounds = span_bounds(spans, batch=b, k_len=k_len, device=dev)  # [batch, span, 2]
    n_spans, k_eff = bounds.shape[1], min(top_k, k_len)
    # spans shared by every prompt are summed as slices of p; per-prompt spans as a product with indicators
    shared = bounds[0].tolist() if bool((bounds == bounds[:1]).all()) else None

    f32 = {"dtype": torch.float32, "device": dev}
    # Per chunk: max and argmax of the scores, then torch's fused softmax p (one cache-friendly pass
    # per row), and from p: the output (p @ value: a 64-column matmul is ~25% faster than one with a
    # span column appended), the span masses, sum_j p_j s_j (entropy), column sums, and the
    # log-sum-exp from the top key: p_argmax = 1 / l.
    span_cols = None if shared is not None else span_indicator(bounds, k_len).transpose(1, 2)[:, None]
    weighted = None  # sum_j p_j v_j
    if value is not None:
        weighted = ws.take("weighted", b * h * q_len * value.shape[-1], dev).view(b, h, q_len, -1)
    span_mass = torch.zeros(b, h, q_len, n_spans, **f32)
    max_score, ps, p_top = (torch.empty(b, h, q_len, **f32) for _ in range(3))
    argmax = torch.empty(b, h, q_len, dtype=torch.long, device=dev)
    top_score = torch.empty(b, h, q_len, k_eff, **f32)
    topk_index = torch.full((b, h, q_len, top_k), -1, dtype=torch.long, device=dev)
    n_visible = torch.empty(b, q_len, dtype=torch.long, device=dev)
    col_p = torch.zeros(b, h, k_len, **f32) if columns else None  # sum over rows of the keys-only softmax
    col_count = torch.zeros(b, k_len, dtype=torch.long, device=dev) if columns else None

    # A plain causal prompt (no mask): visibility is the triangle, its counts are known in closed form.
    triangle = causal_triangle(min(chunk, q_len), dev) if attention_mask is None and is_causal else None
    if triangle is not None:
        n_visible[:] = torch.arange(k_len - q_len + 1, k_len + 1, device=dev)
        if columns:
            col_count[:] = q_len - (torch.arange(k_len, device=dev) - (k_len - q_len)).clamp(min=0)
    # scores, probabilities
    scratch = ws.take("scores", 2 * b * h * min(chunk, q_len) * k_len, dev).view(2, -1)
    for start in range(0, q_len, chunk):
        rows = slice(start, min(start + chunk, q_len))
        # A causal query never sees keys past its own position, so these rows need only the keys up to
        # the last row's: about half the work of the full [query, key] square over a whole prompt.
        k_end = k_len - q_len + rows.stop if is_causal else k_len
        s, visible = chunk_scores(
            q_scaled, key_t[..., :k_end], attention_mask, rows, scaling=1.0, is_causal=is_causal,
            softcap=softcap, workspace=scratch[0], triangle=triangle,
        )
        seen = n_visible[:, rows]
        if visible is not None:
            seen[:] = visible.sum(-1)
        max_score[:, :, rows], argmax[:, :, rows] = row_max(s)
        if k_eff:
            top_score[:, :, rows], topk_index[:, :, rows, :k_eff] = s.topk(k_eff, dim=-1)
        # hidden keys hold float32's minimum: exactly 0 after the softmax (and 0 x min = 0 below)
        p = torch.ops.aten._softmax.out(s, -1, False, out=scratch[1, : s.numel()].view(s.shape))
        if not bool(seen.all()):  # rows that see no key came out uniform: make them 0
            p.mul_((seen > 0)[:, None, :, None].to(p.dtype))
        p_top[:, :, rows] = p.gather(-1, argmax[:, :, rows, None])[..., 0]
        ps[:, :, rows] = torch.einsum("bhck,bhck->bhc", p, s)  # ~2x faster than (p * s).sum(-1)
        if value is not None:
            weighted[:, :, rows] = torch.matmul(p, value_f32[:, :, :k_end])
        if span_cols is not None:  # [batch, 1, key, span]
            span_mass[:, :, rows] = torch.matmul(p, span_cols[:, :, :k_end])
        for j, (lo, hi) in enumerate(shared or []):
            span_mass[:, :, rows, j] = p[..., lo : min(hi, k_end)].sum(-1)
        if columns:
            col_p[..., :k_end] += p.sum(2)
            if visible is not None:
                col_count[..., :k_end] += visible.sum(1)
        del s, p

    empty = (n_visible == 0)[:, None]  # [batch, 1, query]: rows that see no key report zeros
    lse = max_score - torch.log(torch.where(empty, 1.0, p_top))  # log sum_j exp(s_j) over the keys
    entropy = lse - ps  # of the keys-only softmax: sum_j p_j (lse - s_j)
    scale = None
    if sinks is not None:  # one more softmax column that is not a key takes mass r = 1 - keys' share
        log_keep = -torch.nn.functional.softplus(sinks.float().view(1, h, 1).to(dev) - lse)  # log keys' share
        scale = torch.exp(log_keep)
        entropy = scale * (entropy - log_keep)  # sum_j r p_j (-log (r p_j)) over keys
        lse = lse - log_keep
        span_mass = span_mass * scale[..., None]
        weighted = weighted * scale[..., None] if value is not None else None
    lse, entropy = torch.where(empty, 0.0, lse), torch.where(empty, 0.0, entropy)
    topk_prob = torch.zeros(b, h, q_len, top_k, **f32)
    if k_eff:
        rank_ok = torch.arange(k_eff, device=dev) < n_visible[:, None, :, None]
        topk_prob[..., :k_eff] = torch.where(rank_ok, torch.exp(top_score - lse[..., None]), 0.0)
        topk_index[..., :k_eff] = torch.where(rank_ok, topk_index[..., :k_eff], -1)
    out = None
    if value is not None:  # a fresh tensor: `weighted` lives in the workspace
        out = torch.empty(b, q_len, h, value.shape[-1], dtype=value.dtype,
                          device=dev).copy_(weighted.transpose(1, 2))
    rows_out = RowStats(lse, torch.where(empty, 0.0, max_score), torch.where(empty, -1, argmax), entropy,
                        span_mass, topk_index, topk_prob, n_visible)
    cols_out = None
    if columns:
        if scale is not None:  # rows weigh r each: recompute the column sums from the final lse
            col_p = columns_from_lse(query, key, attention_mask, lse, scaling=scaling, is_causal=is_causal,
                                     softcap=softcap, chunk=chunk).total
        cols_out = ColumnStats(col_p, col_count)
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
    key_t = key.float().transpose(-1, -2).contiguous()
    total = torch.zeros(b, h, k_len, dtype=torch.float32, device=query.device)
    count = torch.zeros(b, k_len, dtype=torch.long, device=query.device)
    for start in range(0, q_len, chunk):
        rows = slice(start, min(start + chunk, q_len))
        s, visible = chunk_scores(
            query, key_t, attention_mask, rows, scaling=scaling, is_causal=is_causal, softcap=softcap
        )
        s.sub_(lse[:, :, rows, None].float()).clamp_(min=-80.0)  # a fast exp: see stats()
        total += s.exp_().mul_(visible[:, None]).sum(2)
        count += visible.sum(1)
    return ColumnStats(total, count)
