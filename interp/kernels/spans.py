"""Key spans: the `[start, stop)` ranges whose attention mass the kernels report.

Spans are given in the padded key coordinates of the batch, either once for every prompt
(`[(0, 1), (40, 52)]`: the first key and a needle) or per prompt as an integer tensor
`[batch, span, 2]` (left-padded prompts put their first real token at different keys).
Negative ends count from the end of the key axis, like Python slices.

    >>> span_bounds([(0, 1), (-2, None)], batch=2, k_len=10).tolist()
    [[[0, 1], [8, 10]], [[0, 1], [8, 10]]]
"""

from collections.abc import Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from interp.errors import InterpError

Spans = Sequence[tuple[int | None, int | None]] | Int[Tensor, "span 2"] | Int[Tensor, "batch span 2"]


def span_bounds(spans: Spans, *, batch: int, k_len: int, device="cpu") -> Int[Tensor, "batch span 2"]:
    """Resolve `spans` to a `[batch, span, 2]` int64 tensor of clamped `[start, stop)` bounds."""
    if isinstance(spans, Tensor):
        bounds = spans.to(device=device, dtype=torch.long)
        if bounds.ndim == 2:
            bounds = bounds[None].expand(batch, -1, -1)
        if bounds.ndim != 3 or bounds.shape[-1] != 2 or bounds.shape[0] != batch:
            raise InterpError(
                f"spans tensor has shape {tuple(spans.shape)}; expected [span, 2] or [batch={batch}, span, "
                "2] holding [start, stop) key positions."
            )
        bounds = torch.where(bounds < 0, bounds + k_len, bounds)
        return bounds.clamp(0, k_len)
    resolved = []
    for span in spans:
        if not (isinstance(span, (tuple, list)) and len(span) == 2):
            raise InterpError(f"span {span!r} is not a (start, stop) pair; write spans as "
                              "[(0, 1), (40, 52)].")
        start, stop, _ = slice(*span).indices(k_len)
        resolved.append((start, max(start, stop)))
    return torch.tensor(resolved, dtype=torch.long, device=device).reshape(1, -1, 2).expand(batch, -1, -1)


def span_indicator(bounds: Int[Tensor, "batch span 2"], k_len: int) -> Tensor:
    """Float `[batch, span, key]` indicator: 1 where the key lies in the span."""
    keys = torch.arange(k_len, device=bounds.device)
    inside = (keys >= bounds[..., :1]) & (keys < bounds[..., 1:])
    return inside.float()
