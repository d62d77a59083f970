"""Scratch buffers the torch kernel reuses across calls (the layers of a forward, the steps of a decode).

Each call of `reference.stats` needs ~30 MB of transient fp32 buffers at 2048 tokens (the scores and
probabilities of a chunk, per-head key and value copies). Fresh allocations that large are fresh pages
from the OS, and on CPU their page faults cost more than the arithmetic done in them (measured on
SmolLM2: ~10% of an all-head statistics forward). A `Workspace` hands out the same buffers again.

    >>> ws = Workspace()
    >>> a = ws.take("scores", 1000)
    >>> ws.take("scores", 800).data_ptr() == a.data_ptr()   # reused: no new allocation
    True

Nothing returned to a caller may live in a workspace buffer: the next call overwrites it. A capture
session's `Stats` probe holds one for the session and drops it at the end.

Memory: the largest size asked for under each name stays allocated while the workspace lives.
"""

import torch
from jaxtyping import Float
from torch import Tensor


class Workspace:
    """Named flat fp32 buffers, grown on demand and reused."""

    def __init__(self) -> None:
        self._buffers: dict[str, Tensor] = {}

    def take(self, name: str, numel: int, device: torch.device | str = "cpu") -> Float[Tensor, " numel"]:
        """A flat fp32 buffer of `numel` elements (uninitialised; shared with earlier takes of `name`)."""
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < numel or buffer.device != torch.device(device):
            buffer = self._buffers[name] = torch.empty(numel, dtype=torch.float32, device=device)
        return buffer[:numel]

    def clear(self) -> None:
        self._buffers.clear()
