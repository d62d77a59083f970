"""Head-level KV-cache compression (DuoAttention-style): full cache for some KV heads, sink +
recent window for the rest, chosen from head scores.

    >>> from interp.intervene.compress import KVPolicy, select_kv_heads               # doctest: +SKIP
    >>> policy = select_kv_heads(m, scores, fraction=0.5, sink=4, window=256)        # doctest: +SKIP
    >>> with interp.compress(m, policy):                                               # doctest: +SKIP
    ...     out = m.hf.generate(**batch, max_new_tokens=16)
"""

from interp.intervene.compress.cache import CompressedCache, HeadSplitLayer, cache_bytes
from interp.intervene.compress.context import compress
from interp.intervene.compress.policy import KVPolicy, PolicyError
from interp.intervene.compress.prefill import prefill
from interp.intervene.compress.select import kv_head_scores, select_kv_heads, top_fraction

__all__ = [
           "CompressedCache",
           "HeadSplitLayer",
           "KVPolicy",
           "PolicyError",
           "cache_bytes",
           "compress",
           "kv_head_scores",
           "prefill",
           "select_kv_heads",
           "top_fraction",
]
