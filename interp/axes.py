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

A head is named `"L.H"` everywhere it is printed or serialized (`head_label`); `parse_head` also
reads the older spellings `"L-H"`, `"L:H"` and `"L18.H6"`.

Example:
    >>> from interp.axes import Pattern
    >>> Pattern  # doctest: +ELLIPSIS
    jaxtyping.Float[Tensor, 'batch head query key']
"""

import re

from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.errors import InterpError

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

_HEAD = re.compile(r"L?(-?\d+)\s*(?:[.:-]\s*H?|H)(-?\d+)")


def head_label(layer: int, head: int) -> str:
    """The one printed and serialized name of a head.

    >>> head_label(18, 6)
    '18.6'
    """
    return f"{int(layer)}.{int(head)}"


def parse_head(label: str) -> tuple[int, int]:
    """`(layer, head)` from a head label: `"18.6"`, or the older `"18-6"`, `"18:6"`, `"L18.H6"`.

    >>> parse_head("18.6"), parse_head("18-6"), parse_head("13:5"), parse_head("L3.H2")
    ((18, 6), (18, 6), (13, 5), (3, 2))
    """
    match = _HEAD.fullmatch(str(label).strip())
    if match is None:
        raise InterpError(f"cannot read head {label!r}; write a head as LAYER.HEAD, e.g. '12.3'.")
    return int(match[1]), int(match[2])


__all__ = ["head_label", "parse_head", "AXES", "Pattern", "Scores", "Query", "Key", "Value", "HeadOutput",
           "Residual", "Visible", "TokenIds"]
