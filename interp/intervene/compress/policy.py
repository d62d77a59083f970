"""`KVPolicy`: which KV heads keep their whole cache and which keep sink + recent window.

A policy is a boolean `[layer, kv_head]` table (True = full cache, "retrieval" head; False =
streaming head: the first `sink` real tokens of each sequence and the `window` most recent
positions). With GQA the unit is the KV head: every query head of a group reads the same cache.

    >>> p = KVPolicy(torch.tensor([[True, False], [False, False]]), sink=2, window=4, head_dim=8)
    >>> p.fraction, p.kv_bytes(100), p.full_kv_bytes(100)
    (0.25, 3776, 12800)

Files: `save_tsv` / `load_tsv` use DuoAttention's `full_attention_heads.tsv` layout (one row per
layer, one tab-separated value per KV head; values above `threshold` are full heads).
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.errors import InterpError


class PolicyError(InterpError, ValueError):
    """A KV policy that cannot be applied (bad fraction, window, or shape)."""


def check_streaming(sink: int, window: int) -> None:
    if window < 1:
        raise PolicyError(f"window must be >= 1 (recent tokens a streaming head keeps), got {window}.")
    if sink < 0:
        raise PolicyError(f"sink must be >= 0 (first tokens a streaming head keeps), got {sink}.")


@dataclass
class KVPolicy:
    """Full (True) or streaming (False) per `(layer, kv_head)`; see the module docstring.

    `head_dim` and `bytes_per_value` size the cache for `kv_bytes` (2 bytes: fp16/bf16).
    `scores` optionally keeps the per-KV-head scores the policy was selected from.
    """

    full: Bool[Tensor, "layer kv_head"]
    sink: int = 4
    window: int = 256
    head_dim: int = 64
    bytes_per_value: int = 2
    scores: Float[Tensor, "layer kv_head"] | None = None

    def __post_init__(self):
        self.full = torch.as_tensor(self.full, dtype=torch.bool).cpu()
        if self.full.ndim != 2 or self.full.numel() == 0:
            raise PolicyError(f"a KV policy is a [layer, kv_head] table, got shape {tuple(self.full.shape)}.")
        check_streaming(self.sink, self.window)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.full.shape)

    @property
    def fraction(self) -> float:
        """Fraction of KV heads that keep their full cache."""
        return self.full.float().mean().item()

    @property
    def budget(self) -> int:
        """Positions a streaming head keeps."""
        return self.sink + self.window

    def full_heads(self, layer: int) -> Tensor:
        return torch.nonzero(self.full[layer]).flatten()

    def streaming_heads(self, layer: int) -> Tensor:
        return torch.nonzero(~self.full[layer]).flatten()

    def kv_bytes(self, n_tokens: int, batch: int = 1) -> int:
        """Bytes of keys + values for `n_tokens` cached tokens under this policy."""
        n_full = int(self.full.sum())
        n_stream = self.full.numel() - n_full
        per_pos = 2 * self.head_dim * self.bytes_per_value * batch
        return per_pos * (n_full * n_tokens + n_stream * min(n_tokens, self.budget))

    def full_kv_bytes(self, n_tokens: int, batch: int = 1) -> int:
        """Bytes of keys + values for `n_tokens` tokens in an uncompressed cache."""
        return 2 * self.head_dim * self.bytes_per_value * batch * self.full.numel() * n_tokens

    def check_model(self, n_layers: int, n_kv_heads: int) -> None:
        if self.shape != (n_layers, n_kv_heads):
            raise PolicyError(
                f"the KV policy is for {self.shape[0]} layers x {self.shape[1]} KV heads, the model has "
                f"{n_layers} x {n_kv_heads}; select or load a policy for this model."
            )

    def save_tsv(self, path: str | Path) -> None:
        """Write 1 (full) / 0 (streaming) as DuoAttention's layers x KV heads TSV."""
        text = "\n".join("\t".join(str(int(v)) for v in row.tolist()) for row in self.full) + "\n"
        Path(path).write_text(text)

    @classmethod
    def load_tsv(cls, path: str | Path, *, shape: tuple[int, int] | None = None, threshold: float = 0.5,
                 sink: int = 4, window: int = 256, head_dim: int = 64,
                 bytes_per_value: int = 2) -> "KVPolicy":
        """Read a layers x KV heads TSV; values > `threshold` are full heads. `shape` checks the model's."""
        try:
            lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
            rows = [[float(v) for v in ln.split("\t")] for ln in lines]
        except FileNotFoundError:
            raise PolicyError(f"no KV policy file at {path}; write one with KVPolicy.save_tsv.") from None
        except ValueError as err:
            raise PolicyError(f"{path} is not a tab-separated table of numbers ({err}).") from None
        if not rows or len({len(r) for r in rows}) != 1:
            raise PolicyError(f"{path}: every row (layer) must have the same number of KV-head values.")
        values = torch.tensor(rows)
        policy = cls(values > threshold, sink=sink, window=window, head_dim=head_dim,
                     bytes_per_value=bytes_per_value, scores=values)
        if shape is not None:
            policy.check_model(*shape)
        return policy
