"""Which keys each query may see, from whatever mask transformers hands the attention function.

transformers builds the mask through `AttentionMaskInterface`; `interp` registers the SDPA builder, so an
attention function receives one of:

- `None`: no padding. Causal modules with more than one query use upper-left alignment, like SDPA's
  `is_causal=True` (query `i` sees keys `0..i`); a single query, or a non-causal module
  (encoders, cross-attention), sees every key.
- a boolean tensor `[batch, 1, query, key]` (True = visible), or
- an additive float tensor `[batch, 1 | head, query, key]` (0 = visible, very negative = hidden).

`visible_keys` turns all three into one boolean tensor, for a slice of query rows at a time so
long prompts never need the full `[query, key]` mask at once.
"""

import torch
from jaxtyping import Bool
from torch import Tensor


def visible_keys(
    attention_mask: Tensor | None,
    *,
    batch: int,
    q_len: int,
    k_len: int,
    is_causal: bool,
    rows: slice = slice(None),
    device: torch.device | str = "cpu",
) -> Bool[Tensor, "batch query key"]:
    """Boolean visibility of keys for the query rows `rows` (True = the query may attend).

    >>> v = visible_keys(None, batch=1, q_len=3, k_len=3, is_causal=True)
    >>> v[0].int().tolist()
    [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    """
    start, stop, _ = rows.indices(q_len)
    if attention_mask is None:
        if is_causal and q_len > 1:
            query_pos = torch.arange(start, stop, device=device)[:, None]
            key_pos = torch.arange(k_len, device=device)[None, :]
            return (key_pos <= query_pos).expand(batch, -1, -1)
        return torch.ones(batch, stop - start, k_len, dtype=torch.bool, device=device)
    mask = attention_mask[:, :, start:stop, :k_len]
    if mask.shape[1] != 1:  # a per-head float mask: only the head-independent part decides visibility
        mask = mask[:, :1]
    mask = mask[:, 0]
    if mask.dtype == torch.bool:
        visible = mask
    else:
        visible = mask > torch.finfo(mask.dtype).min / 2
    return visible.expand(batch, -1, -1)


def additive_bias(attention_mask: Tensor | None, rows: slice = slice(None)) -> Tensor | None:
    """The float part of a mask that must be added to the scores (ALiBi-style biases), else None.

    Boolean masks and hard 0/-inf float masks carry no bias: visibility alone describes them.
    """
    if attention_mask is None or attention_mask.dtype == torch.bool:
        return None
    mask = attention_mask[:, :, rows]
    finite = mask > torch.finfo(mask.dtype).min / 2
    bias = torch.where(finite, mask, torch.zeros((), dtype=mask.dtype, device=mask.device))
    if not bias.any():
        return None
    return bias
