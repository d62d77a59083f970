"""The axis vocabulary of `interp`, written down once.

Every tensor that crosses a public boundary is annotated with `jaxtyping` shapes built from
these names, in this order of precedence:

| axis      | meaning                                                                     |
|-----------|-----------------------------------------------------------------------------|
| `batch`   | prompts in a batch (left-padded: real tokens sit at the right)              |
| `layer`   | transformer block index, 0-based, within one attention stack                |
| `head`    | query head                                                                  |
| `kv_head` | key/value head; with GQA query head `h` reads kv head `h // group_size`     |
| `query`   | position of the attending token (a row of an attention pattern)             |
| `key`     | position of the attended token (a column of an attention pattern)           |
| `pos`     | a token position in an activation that is neither row nor column           |
| `span`    | one of several requested key ranges (e.g. the first token, a needle)        |
| `d_head`  | per-head feature                                                            |
| `d_model` | residual-stream feature                                                     |

Positions are always in the padded coordinates of the batch the model saw. During KV-cached
generation the `query` axis of a recording concatenates the prefill rows and one row per
decoding step, and the `key` axis runs over the whole sequence seen so far.

Example:
    >>> from interp.axes import Pattern
    >>> Pattern  # doctest: +ELLIPSIS
    jaxtyping.Float[Tensor, 'batch head query key']
"""

from jaxtyping import Bool, Float, Int
from torch import Tensor

AXES = ("batch", "layer", "head", "kv_head", "query", "key", "pos", "span", "d_head", "d_model")

Pattern = Float[Tensor, "batch head query key"]
Scores = Float[Tensor, "batch head query key"]
Query = Float[Tensor, "batch head query d_head"]
Key = Float[Tensor, "batch kv_head key d_head"]
Value = Float[Tensor, "batch kv_head key d_head"]
HeadOutput = Float[Tensor, "batch query head d_head"]  # `z`: the output projection's input, split by head
Residual = Float[Tensor, "batch pos d_model"]
Visible = Bool[Tensor, "batch query key"]
TokenIds = Int[Tensor, "batch pos"]

__all__ = ["AXES", "Pattern", "Scores", "Query", "Key", "Value", "HeadOutput", "Residual", "Visible", "TokenIds"]
