"""Turn per-head scores into a `KVPolicy`: GQA aggregation and top-fraction selection.

Aggregation rule: a KV head's score is the **max** over its query heads (a KV head stays full if
any head reading it needs the whole context). Selection keeps `round(fraction x KV heads)` heads
(at least one) with the highest scores; ties go to the lower `(layer, kv_head)` index.

    >>> policy = select_kv_heads(m, scores, fraction=0.5, sink=4, window=256)   # doctest: +SKIP
"""

import torch
from jaxtyping import Float
from torch import Tensor

from interp.intervene.compress.policy import KVPolicy, PolicyError, check_streaming
from interp.models.model import as_model


def check_fraction(fraction: float) -> float:
    if not 0.0 < fraction <= 1.0:
        raise PolicyError(f"fraction of full KV heads must be in (0, 1], got {fraction}.")
    return float(fraction)


def kv_head_scores(scores: Float[Tensor, "layer head"], n_kv_heads: int) -> Float[Tensor, "layer kv_head"]:
    """Max over each KV head's query heads (`[layer, head]` -> `[layer, kv_head]`; already per-KV: unchanged).

    >>> kv_head_scores(torch.tensor([[0.1, 0.5, 0.2, 0.0]]), 2).tolist()
    [[0.5, 0.20000000298023224]]
    """
    scores = torch.as_tensor(scores, dtype=torch.float32)
    n_heads = scores.shape[-1]
    if n_heads == n_kv_heads:
        return scores
    if n_heads % n_kv_heads:
        raise PolicyError(f"scores have {n_heads} heads per layer, not a multiple of {n_kv_heads} KV heads.")
    return scores.reshape(scores.shape[0], n_kv_heads, n_heads // n_kv_heads).amax(-1)


def top_fraction(scores: Float[Tensor, "layer kv_head"], fraction: float) -> Tensor:
    """Boolean table of the `round(fraction x n)` highest scores (at least 1; ties: lower index first)."""
    check_fraction(fraction)
    flat = scores.flatten()
    k = max(1, round(fraction * flat.numel()))
    order = torch.argsort(-flat, stable=True)[:k]
    full = torch.zeros(flat.numel(), dtype=torch.bool)
    full[order] = True
    return full.reshape(scores.shape)


def select_kv_heads(model, scores, fraction: float = 0.5, *, sink: int = 4, window: int = 256) -> KVPolicy:
    """The `fraction` of KV heads with the highest scores keep a full cache; the rest stream.

    `scores`: `RetrievalScores` (their mean is used) or a `[layer, head]` / `[layer, kv_head]` tensor.
    """
    m = as_model(model)
    check_fraction(fraction)
    check_streaming(sink, window)
    adapter = m.adapter
    scores = scores.mean if hasattr(scores, "trial_ids") else scores  # RetrievalScores: mean over trials
    scores = torch.as_tensor(scores, dtype=torch.float32).cpu()
    n_layers = adapter.n_layers()
    if scores.ndim != 2 or scores.shape[0] != n_layers or scores.shape[1] not in (adapter.n_heads,
                                                                                  adapter.n_kv_heads):
        raise PolicyError(
            f"scores have shape {tuple(scores.shape)}; expected [{n_layers}, {adapter.n_heads}] "
            f"(query heads) or [{n_layers}, {adapter.n_kv_heads}] (KV heads) for this model."
        )
    per_kv = kv_head_scores(scores, adapter.n_kv_heads)
    dtype = next(m.hf.parameters()).dtype
    return KVPolicy(top_fraction(per_kv, fraction), sink=sink, window=window, head_dim=adapter.head_dim,
                    bytes_per_value=torch.finfo(dtype).bits // 8, scores=per_kv)
