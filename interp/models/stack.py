"""`Stack`: where one attention stack of a model lives (the record both adapters and inference fill).

    >>> Stack("model.layers", attn="self_attn", out_proj="o_proj").mlp
    'mlp'
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Stack:
    """One attention stack: `blocks` is the module list; the other paths are relative to a block."""

    blocks: str
    attn: str
    out_proj: str
    mlp: str | None = "mlp"
    causal: bool = True
    out_proj_in_block: bool = False  # `out_proj` is relative to the block (BERT: attention.output.dense)
    attn_layers: tuple[int, ...] | None = None  # hybrid models: the blocks that have attention (None = all)
    z_transform: str | None = None  # an output gate / sub-norm between `z` and `out_proj` (its source line)
