"""`AttentionCall`: everything one attention layer sees in one forward pass, with exact helpers.

The capture engine builds one `AttentionCall` per layer per forward and hands it to every probe.
Its helpers reproduce transformers' eager attention exactly (fp32 math, same scaling, softcap
and mask), but only for the heads and query rows a probe asks for, so a probe never pays for a
full `[batch, head, query, key]` tensor it does not need.
"""

from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from interp.axes import Key, Query, Value, Visible
from interp.masks import additive_bias, visible_keys


@dataclass
class AttentionCall:
    """One attention layer's inputs during one forward pass.

    Attributes:
        stack: which attention stack ("decoder", "encoder", "cross").
        layer: block index within the stack.
        module: the attention `nn.Module` transformers called us from.
        query, key, value: as transformers passes them (after rotary); `key`/`value` hold the
            whole KV cache during decoding.
        attention_mask: the mask as transformers passes it (see `interp.masks`).
        scaling: the factor applied to `q·k`.
        softcap: Gemma-2 style logit soft-capping (`tanh(s / c) * c`), or None.
        is_causal: whether the module is causal.
        step: index of this forward pass within the capture (0 = prefill).
        position_bias: T5-style additive score bias, or None.
        key_offset: absolute position of `key[..., 0, :]` in the sequence.
    """

    stack: str
    layer: int
    module: torch.nn.Module
    query: Query
    key: Key
    value: Value
    attention_mask: Tensor | None
    scaling: float
    softcap: float | None
    is_causal: bool
    step: int
    position_bias: Tensor | None = None
    #: absolute position of key 0 (tokens a sliding-window cache has dropped), 0 otherwise
    key_offset: int = 0
    #: learned per-head sink logits (gpt-oss `s_aux`): a softmax column that is not a key, or None
    sinks: Tensor | None = None
    #: set by the engine when editors changed some heads: (heads, their fp32 weights over all rows)
    edited: tuple[Tensor, Tensor] | None = field(default=None, repr=False)

    @property
    def batch(self) -> int:
        return self.query.shape[0]

    @property
    def n_heads(self) -> int:
        return self.query.shape[1]

    @property
    def n_kv_heads(self) -> int:
        return self.key.shape[1]

    @property
    def q_len(self) -> int:
        return self.query.shape[2]

    @property
    def k_len(self) -> int:
        return self.key.shape[2]

    def kv_head_of(self, heads: Tensor) -> Tensor:
        """The kv head each query head reads (GQA)."""
        return heads // (self.n_heads // self.n_kv_heads)

    def visible(self, rows: slice = slice(None)) -> Visible:
        """Boolean visibility `[batch, query, key]` for the query rows `rows`."""
        return visible_keys(
            self.attention_mask,
            batch=self.batch,
            q_len=self.q_len,
            k_len=self.k_len,
            is_causal=self.is_causal,
            rows=rows,
            device=self.query.device,
        )

    def scores(
        self, heads: Tensor | None = None, rows: slice = slice(None)
    ) -> Float[Tensor, "batch head query key"]:
        """Pre-softmax scores in fp32, hidden keys at -inf, exactly as eager attention computes them."""
        # every head: group query heads under their kv head instead of copying keys per head
        if heads is None:
            b, h, _, d = self.query.shape
            kv = self.key.shape[1]
            q = self.query[:, :, rows].float()
            s = torch.matmul(q.reshape(b, kv, -1, d), self.key.float().transpose(-1, -2))
            s = s.reshape(b, h, q.shape[2], -1)
            s = s * self.scaling
            heads = self._heads(None)
        else:
            heads = self._heads(heads)
            q = self.query[:, heads, rows].float()
            k = self.key[:, self.kv_head_of(heads)].float()
            s = torch.matmul(q, k.transpose(-1, -2)) * self.scaling
        if self.softcap is not None:
            s = torch.tanh(s / self.softcap) * self.softcap
        for bias in (additive_bias(self.attention_mask, rows), self.position_bias):
            if bias is not None:
                bias = bias[:, :, rows] if bias is self.position_bias else bias
                s = s + (bias.float() if bias.shape[1] == 1 else bias[:, heads].float())
        return s.masked_fill(~self.visible(rows)[:, None], float("-inf"))

    def weights(
        self, heads: Tensor | None = None, rows: slice = slice(None)
    ) -> Float[Tensor, "batch head query key"]:
        """Softmax attention in fp32, as the model used it (editors' changes included).

        Rows that see no key (padding queries) are all zeros. Memory: `batch x len(heads) x rows x
        key` floats; pass `heads` / `rows` to keep it small.
        """
        s = self.scores(heads, rows)
        heads = self._heads(heads)
        if self.sinks is None:
            w = torch.softmax(s, dim=-1).nan_to_num(0.0)
        else:  # softmax over keys + the head's sink column, then drop the sink (as the model does)
            sink = self.sinks.float()[heads].view(1, -1, 1, 1).expand(*s.shape[:-1], 1)
            w = torch.softmax(torch.cat([s, sink], dim=-1), dim=-1)[..., :-1]
        if self.edited is not None:
            edited_heads, edited_weights = self.edited
            match = heads[:, None] == edited_heads[None, :]
            for i, j in torch.nonzero(match).tolist():
                w[:, i] = edited_weights[:, j, rows]
        return w

    def _heads(self, heads: Tensor | None) -> Tensor:
        if heads is None:
            return torch.arange(self.n_heads, device=self.query.device)
        return heads.to(self.query.device)
