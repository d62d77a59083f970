"""Fused Triton kernels: flash attention that also returns exact row statistics (GPU).

Pass 1 (`_rows_kernel`) is a flash-attention forward: one program per (block of query rows, batch x
head) walks the keys in blocks keeping an online softmax (running max `m`, its key, `l = sum
exp(s - m)`, `E = sum exp(s - m) (s - m)` and per-span sums, all rescaled by `exp(m_old - m_new)`),
and writes the attention output plus `lse = m + log l`, entropy `log l - E / l` and span masses.
Pass 2 (`_columns_kernel`) walks the query rows for each block of keys and sums `exp(s - lse)`:
the attention each key receives. Nothing of size `query x key` is ever stored.

On CPU the kernels run under Triton's interpreter (`TRITON_INTERPRET=1`, set before importing
triton); it is slow, so keep shapes tiny. `top_k` is not fused: `interp.kernels` serves it from
the torch path.

    >>> # on a GPU:  out, rows, cols = fused_stats(q, k, v, mask, scaling=0.125, is_causal=True)
"""

import torch
import triton
import triton.language as tl
from torch import Tensor

from interp.axes import HeadOutput, Key, Query, Value
from interp.kernels.reference import check_shapes
from interp.kernels.results import ColumnStats, RowStats
from interp.kernels.spans import Spans, span_bounds

MASK_NONE, MASK_BOOL, MASK_FLOAT = 0, 1, 2


@triton.jit
def _scores(q, k_ptrs, offs_m, offs_n, k_len, mask_ptr, s_mb, s_mq, s_mk, scaling, softcap,
            HAS_SOFTCAP: tl.constexpr, IS_CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr,
            FLOAT_MIN: tl.constexpr, PRECISION: tl.constexpr, BLOCK_D: tl.constexpr, d_head, q_len):
    """Scores of one [BLOCK_M, BLOCK_N] tile (hidden = -inf) and its visibility."""
    d = tl.arange(0, BLOCK_D)
    k = tl.load(k_ptrs, mask=(offs_n[:, None] < k_len) & (d[None, :] < d_head), other=0.0)
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scaling
    if HAS_SOFTCAP:
        x = s / softcap  # tanh(x) = 1 - 2 / (exp(2x) + 1), exact in fp32 and overflow-safe
        s = (1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)) * softcap
    inside = (offs_m[:, None] < q_len) & (offs_n[None, :] < k_len)
    if MASK_KIND == 0:
        visible = inside
        if IS_CAUSAL:
            visible = visible & (offs_n[None, :] <= offs_m[:, None])
    else:
        m_ptrs = mask_ptr + s_mb + offs_m[:, None] * s_mq + offs_n[None, :] * s_mk
        if MASK_KIND == 1:
            visible = inside & (tl.load(m_ptrs, mask=inside, other=0) != 0)
        else:
            bias = tl.load(m_ptrs, mask=inside, other=FLOAT_MIN).to(tl.float32)
            visible = inside & (bias > FLOAT_MIN / 2)
            s = s + tl.where(visible, bias, 0.0)
    s = tl.where(visible, s, float("-inf"))
    return s, visible


@triton.jit
def _rows_kernel(
    Q, K, V, O, MASK, SPANS, LSE, MAXS, ARG, ENT, SPANM, NVIS,
    sqb, sqh, sqm, sqd, skb, skh, skn, skd, svb, svh, svn, svd, sob, som, soh, sod,
    smb, smh, smq, smk, n_heads, group, q_len, k_len, d_head, d_v, n_spans, scaling, softcap,
    HAS_SOFTCAP: tl.constexpr, IS_CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, FLOAT_MIN: tl.constexpr,
    PRECISION: tl.constexpr, WRITE_OUT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, S_PAD: tl.constexpr,
):
    pid_m, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // n_heads, bh % n_heads
    kvh = h // group
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    d, dv = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_DV)
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqm + d[None, :] * sqd,
                mask=(offs_m[:, None] < q_len) & (d[None, :] < d_head), other=0.0)
    sp = tl.arange(0, S_PAD)
    span_lo = tl.load(SPANS + (b * n_spans + sp) * 2, mask=sp < n_spans, other=0)
    span_hi = tl.load(SPANS + (b * n_spans + sp) * 2 + 1, mask=sp < n_spans, other=0)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    e_i = tl.zeros([BLOCK_M], tl.float32)
    arg_i = tl.full([BLOCK_M], -1, tl.int32)
    cnt_i = tl.zeros([BLOCK_M], tl.int32)
    span_i = tl.zeros([BLOCK_M, S_PAD], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)

    hi = k_len
    if IS_CAUSAL and MASK_KIND == 0:
        hi = tl.minimum(k_len, (pid_m + 1) * BLOCK_M)
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k_ptrs = K + b * skb + kvh * skh + offs_n[:, None] * skn + d[None, :] * skd
        s, visible = _scores(q, k_ptrs, offs_m, offs_n, k_len, MASK + b * smb + h * smh, 0, smq, smk, scaling,
                             softcap, HAS_SOFTCAP, IS_CAUSAL, MASK_KIND, FLOAT_MIN, PRECISION, BLOCK_D,
                             d_head, q_len)
        blk_max = tl.max(s, axis=1)
        blk_arg = tl.argmax(s, axis=1, tie_break_left=True).to(tl.int32) + start_n
        arg_i = tl.where(blk_max > m_i, blk_arg, arg_i)
        m_new = tl.maximum(m_i, blk_max)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe[:, None])
        t = tl.where(visible, s - m_safe[:, None], 0.0)
        shift = tl.where(l_i > 0, m_i - m_safe, 0.0)
        e_i = alpha * (e_i + shift * l_i) + tl.sum(p * t, axis=1)
        l_i = alpha * l_i + tl.sum(p, axis=1)
        cnt_i += tl.sum(visible.to(tl.int32), axis=1)
        in_span = (offs_n[None, :] >= span_lo[:, None]) & (offs_n[None, :] < span_hi[:, None])  # [S_PAD, N]
        span_i = span_i * alpha[:, None] + tl.sum(p[:, None, :] * in_span.to(tl.float32)[None, :, :], axis=2)
        if WRITE_OUT:
            v = tl.load(V + b * svb + kvh * svh + offs_n[:, None] * svn + dv[None, :] * svd,
                        mask=(offs_n[:, None] < k_len) & (dv[None, :] < d_v), other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new

    empty = l_i == 0
    inv_l = tl.where(empty, 0.0, 1.0 / tl.where(empty, 1.0, l_i))
    row = (b * n_heads + h) * q_len + offs_m
    ok = offs_m < q_len
    tl.store(LSE + row, tl.where(empty, 0.0, m_i + tl.log(tl.where(empty, 1.0, l_i))), mask=ok)
    tl.store(MAXS + row, tl.where(empty, 0.0, m_i), mask=ok)
    tl.store(ARG + row, tl.where(empty, -1, arg_i), mask=ok)
    tl.store(ENT + row, tl.where(empty, 0.0, tl.log(tl.where(empty, 1.0, l_i)) - e_i * inv_l), mask=ok)
    tl.store(SPANM + row[:, None] * n_spans + sp[None, :], span_i * inv_l[:, None],
             mask=ok[:, None] & (sp[None, :] < n_spans))
    tl.store(NVIS + b * q_len + offs_m, cnt_i, mask=ok & ((offs_m * 0 + h) == 0))
    if WRITE_OUT:
        o = acc * inv_l[:, None]
        tl.store(O + b * sob + offs_m[:, None] * som + h * soh + dv[None, :] * sod, o.to(O.dtype.element_ty),
                 mask=ok[:, None] & (dv[None, :] < d_v))


@triton.jit
def _columns_kernel(
    Q, K, MASK, LSE, TOTAL, COUNT,
    sqb, sqh, sqm, sqd, skb, skh, skn, skd, smb, smh, smq, smk, n_heads, group, q_len, k_len, d_head,
    scaling, softcap,
    HAS_SOFTCAP: tl.constexpr, IS_CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, FLOAT_MIN: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_n, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // n_heads, bh % n_heads
    kvh = h // group
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    d = tl.arange(0, BLOCK_D)
    k_ptrs = K + b * skb + kvh * skh + offs_n[:, None] * skn + d[None, :] * skd
    total = tl.zeros([BLOCK_N], tl.float32)
    count = tl.zeros([BLOCK_N], tl.int32)
    lo = 0
    if IS_CAUSAL and MASK_KIND == 0:
        lo = (pid_n * BLOCK_N) // BLOCK_M * BLOCK_M
    for start_m in range(lo, q_len, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqm + d[None, :] * sqd,
                    mask=(offs_m[:, None] < q_len) & (d[None, :] < d_head), other=0.0)
        s, visible = _scores(q, k_ptrs, offs_m, offs_n, k_len, MASK + b * smb + h * smh, 0, smq, smk, scaling,
                             softcap, HAS_SOFTCAP, IS_CAUSAL, MASK_KIND, FLOAT_MIN, PRECISION, BLOCK_D,
                             d_head, q_len)
        lse = tl.load(LSE + (b * n_heads + h) * q_len + offs_m, mask=offs_m < q_len, other=0.0)
        p = tl.where(visible, tl.exp(s - lse[:, None]), 0.0)
        total += tl.sum(p, axis=0)
        count += tl.sum(visible.to(tl.int32), axis=0)
    ok = offs_n < k_len
    tl.store(TOTAL + (b * n_heads + h) * k_len + offs_n, total, mask=ok)
    tl.store(COUNT + b * k_len + offs_n, count, mask=ok & ((offs_n * 0 + h) == 0))


def _mask_args(attention_mask: Tensor | None, batch: int) -> tuple[int, Tensor, tuple[int, int, int, int]]:
    """Kind, tensor and (batch, head, query, key) strides of the mask; broadcast axes get stride 0."""
    if attention_mask is None:
        return MASK_NONE, torch.empty(1), (0, 0, 0, 0)
    mask = attention_mask.view(torch.uint8) if attention_mask.dtype == torch.bool else attention_mask
    kind = MASK_BOOL if attention_mask.dtype == torch.bool else MASK_FLOAT
    strides = tuple(0 if mask.shape[i] == 1 else mask.stride(i) for i in range(4))
    return kind, mask, strides


def _common(query: Tensor, key: Tensor, attention_mask: Tensor | None, softcap: float | None, block: int):
    b, h, q_len, d = query.shape
    kind, mask, mstrides = _mask_args(attention_mask, b)
    float_min = torch.finfo(attention_mask.dtype).min if kind == MASK_FLOAT else -3.0e38
    precision = "ieee" if query.dtype == torch.float32 else "tf32"
    consts = dict(HAS_SOFTCAP=softcap is not None, MASK_KIND=kind, FLOAT_MIN=float_min, PRECISION=precision,
                  BLOCK_M=block, BLOCK_N=block, BLOCK_D=max(16, triton.next_power_of_2(d)))
    return mask, mstrides, consts


@torch.no_grad()
def fused_stats(
    query: Query,
    key: Key,
    value: Value | None,
    attention_mask: Tensor | None,
    *,
    scaling: float,
    is_causal: bool,
    softcap: float | None = None,
    spans: Spans = (),
    columns: bool = False,
    block: int = 64,
) -> tuple[HeadOutput | None, RowStats, ColumnStats | None]:
    """Attention output (if `value` is given), row statistics and optionally column statistics.

    Same arguments and results as `interp.kernels.reference.stats` (without `top_k`). `block` is
    the tile size for queries and keys (>= 16; 64 suits most GPUs, 16 the interpreter).
    Memory: O(batch x head x query) for the statistics, nothing quadratic.
    """
    check_shapes(query, key, value)
    b, h, q_len, d = query.shape
    kv, k_len = key.shape[1], key.shape[2]
    dev = query.device
    mask, ms, consts = _common(query, key, attention_mask, softcap, block)
    bounds = span_bounds(spans, batch=b, k_len=k_len, device=dev).to(torch.int32).contiguous()
    n_spans = bounds.shape[1]
    f32 = dict(dtype=torch.float32, device=dev)
    lse, max_score, entropy = (torch.empty(b, h, q_len, **f32) for _ in range(3))
    argmax = torch.empty(b, h, q_len, dtype=torch.int32, device=dev)
    span_mass = torch.empty(b, h, q_len, n_spans, **f32)
    n_visible = torch.empty(b, q_len, dtype=torch.int32, device=dev)
    dv = value.shape[-1] if value is not None else d
    out = (torch.empty(b, q_len, h, dv, dtype=value.dtype, device=dev) if value is not None
           else torch.empty(1, 1, 1, 1))
    v = value if value is not None else key
    is_causal = is_causal and q_len > 1  # one query (KV-cached decoding) sees every key, as in SDPA
    grid = (triton.cdiv(q_len, block), b * h)
    _rows_kernel[grid](
        query, key, v, out, mask.to(dev), bounds, lse, max_score, argmax, entropy, span_mass, n_visible,
        *query.stride(), *key.stride(), *v.stride(), *out.stride(), *ms,
        h, h // kv, q_len, k_len, d, dv, n_spans, scaling, float(softcap or 1.0),
        IS_CAUSAL=is_causal, WRITE_OUT=value is not None, BLOCK_DV=max(16, triton.next_power_of_2(dv)),
        S_PAD=max(1, triton.next_power_of_2(n_spans)), **consts,
    )
    rows = RowStats(
        lse, max_score, argmax.long(), entropy, span_mass,
        torch.empty(b, h, q_len, 0, dtype=torch.long, device=dev), torch.empty(b, h, q_len, 0, **f32),
        n_visible.long(),
    )
    cols = column_stats(query, key, attention_mask, lse, scaling=scaling, is_causal=is_causal,
                        softcap=softcap, block=block) if columns else None
    return (out if value is not None else None), rows, cols


@torch.no_grad()
def column_stats(
    query: Query,
    key: Key,
    attention_mask: Tensor | None,
    lse,
    *,
    scaling: float,
    is_causal: bool,
    softcap: float | None = None,
    block: int = 64,
) -> ColumnStats:
    """Second pass: attention each key receives, `sum_i exp(s_ik - lse_i)` over the queries that see it."""
    check_shapes(query, key)
    b, h, q_len, d = query.shape
    kv, k_len = key.shape[1], key.shape[2]
    mask, ms, consts = _common(query, key, attention_mask, softcap, block)
    total = torch.empty(b, h, k_len, dtype=torch.float32, device=query.device)
    count = torch.empty(b, k_len, dtype=torch.int32, device=query.device)
    is_causal = is_causal and q_len > 1
    grid = (triton.cdiv(k_len, block), b * h)
    _columns_kernel[grid](
        query, key, mask.to(query.device), lse.contiguous(), total, count,
        *query.stride(), *key.stride(), *ms, h, h // kv, q_len, k_len, d, scaling, float(softcap or 1.0),
        IS_CAUSAL=is_causal, **consts,
    )
    return ColumnStats(total, count.long())
