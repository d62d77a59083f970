"""Shared cases for the kernel tests: random attention inputs and an independent eager reference.

The reference materialises the full pattern the way transformers' eager attention does (repeat kv
heads, scale, softcap, add or apply the mask, softmax) and reads every statistic off it by its
textbook definition. It shares no code with `interp.kernels`.
"""

import pytest
import torch

MASKS = ("causal", "padded_bool", "padded_float", "alibi_float", "decode", "full")


def make_case(mask_kind, *, batch=2, heads=4, kv_heads=2, q_len=13, k_len=None, d=16, dtype=torch.float32,
              seed=0):
    """Random q/k/v and a mask as transformers would hand it to an attention function."""
    g = torch.Generator().manual_seed(seed)
    k_len = k_len or q_len
    if mask_kind == "decode":
        q_len = 1
    q = torch.randn(batch, heads, q_len, d, generator=g).to(dtype)
    k = torch.randn(batch, kv_heads, k_len, d, generator=g).to(dtype)
    v = torch.randn(batch, kv_heads, k_len, d, generator=g).to(dtype)
    # queries sit at the end of the key axis (prefill: q_len == k_len)
    q_pos = torch.arange(k_len - q_len, k_len)[:, None]
    k_pos = torch.arange(k_len)[None, :]
    pad = torch.tensor([min(3 + i, k_len - 2) for i in range(batch)])  # left padding per prompt
    pad[0] = 0
    visible = (k_pos <= q_pos)[None] & (k_pos[None] >= pad[:, None, None])  # [b, q, k]
    if mask_kind in ("causal", "full"):
        mask = None
    elif mask_kind in ("padded_bool", "decode"):
        mask = visible[:, None]
    else:
        mask = torch.where(visible, 0.0, torch.finfo(torch.float32).min)[:, None]
        if mask_kind == "alibi_float":  # a finite per-head bias on the visible keys
            slopes = torch.linspace(0.1, 0.8, heads)[None, :, None, None]
            mask = mask + torch.where(visible[:, None], -slopes * (q_pos - k_pos).abs().float(), 0.0)
    is_causal = mask_kind != "full"
    return q, k, v, mask, is_causal


def eager_reference(q, k, mask, *, is_causal, scaling, softcap=None, spans=(), top_k=0):
    """Every statistic computed from the full fp32 softmax pattern."""
    b, h, q_len, _ = q.shape
    k_len = k.shape[2]
    kk = k.float().repeat_interleave(h // k.shape[1], dim=1)
    s = q.float() @ kk.transpose(-1, -2) * scaling
    if softcap is not None:
        s = torch.tanh(s / softcap) * softcap
    if mask is None:
        vis = torch.ones(q_len, k_len, dtype=torch.bool)
        if is_causal and q_len > 1:
            vis = torch.tril(vis)
        vis = vis.expand(b, 1, q_len, k_len)
    elif mask.dtype == torch.bool:
        vis = mask
    else:
        vis = (mask > -1e30)[:, :1]
        s = s + torch.where(mask > -1e30, mask, 0.0)
    s = s.masked_fill(~vis, float("-inf"))
    p = torch.softmax(s, dim=-1)
    seen = vis[:, 0].sum(-1)  # [b, q]
    empty = (seen == 0)[:, None].expand(b, h, q_len)
    p = torch.where(empty[..., None], 0.0, p)
    ref = {
        "lse": torch.where(empty, 0.0, torch.logsumexp(s, -1)),
        "max_score": torch.where(empty, 0.0, s.max(-1).values),
        "argmax": torch.where(empty, -1, s.argmax(-1)),
        "entropy": -torch.special.xlogy(p, p).sum(-1),
        "span_mass": torch.stack([p[..., slice(*sp)].sum(-1) for sp in spans], -1) if spans else None,
        "n_visible": seen,
        "col_total": p.sum(2),
        "col_count": vis[:, 0].sum(1),
        "pattern": p,
    }
    if top_k:
        probs, idx = p.sort(-1, descending=True)
        ref["topk_prob"], ref["topk_index"] = probs[..., :top_k], idx[..., :top_k]
    return ref


@pytest.fixture
def case():
    return make_case


@pytest.fixture
def eager():
    return eager_reference
