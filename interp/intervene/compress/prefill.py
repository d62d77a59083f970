"""Chunked prefill: feed a long prompt in pieces so no pass builds a `[query, every key]` mask.

A one-shot prefill of `n` tokens gives each streaming head an `[n, n]` visibility mask and SDPA's
masked path a score matrix of that size, which dominates peak memory at long context. Feeding
`chunk` tokens per pass bounds both: full heads see `[chunk, seen]`, streaming heads `[chunk,
sink + window + chunk]` (the cache evicts after every pass). The result equals the one-shot pass:
a query at position `p` needs only the sink and the keys after `p - window`, and a pass's eviction
keeps the `window` newest positions.

    >>> with interp.compress(m, policy):                                    # doctest: +SKIP
    ...     logits, cache = prefill(m, ids, chunk=512)
    ...     out = m.hf(input_ids=logits.argmax(-1)[:, None], cache=cache)   # decode on

Works without `interp.compress` too (transformers' own cache grows as usual). `reuse` starts from a
cache that already holds a shared prefix (copied first, so it can serve several prompts).

Memory: the activations of one chunk, and the cache (logits only for the last position).
"""

import copy

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import InterpError
from interp.models.model import as_model


@torch.no_grad()
def prefill(
    model,
    input_ids: Int[Tensor, "batch seq"],
    *,
    chunk: int = 512,
    reuse=None,
) -> tuple[Float[Tensor, "batch vocab"], object]:
    """Run `input_ids` through the model `chunk` tokens at a time; return the last position's logits
    and the cache (see the module docstring). `reuse`: a cache holding the tokens before `input_ids`.

    Unpadded prompts only (a batch of equal-length prompts): left padding needs the attention mask of
    every pass, which one-shot `generate` handles.
    """
    m = as_model(model)
    if chunk < 1:
        raise InterpError(f"chunk must be >= 1 token, got {chunk}.")
    if input_ids.shape[1] == 0:
        raise InterpError("prefill needs at least one new token.")
    cache = copy.deepcopy(reuse) if reuse is not None else None
    for start in range(0, input_ids.shape[1], chunk):
        piece = input_ids[:, start:start + chunk]
        past = {"cache": cache} if cache is not None else {}
        out = m.hf(input_ids=piece, use_cache=True, logits_to_keep=1, **past)  # [batch, vocab] logits only
        cache = output_cache(out)
    return out.logits[:, -1], cache


def output_cache(out):
    """The cache a forward pass returned (`out.cache`; `past_key_values` in older transformers)."""
    return out.cache if hasattr(out, "cache") else out.past_key_values
