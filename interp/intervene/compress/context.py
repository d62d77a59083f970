"""`interp.compress(model, policy)`: run a model with a head-level compressed KV cache.

    >>> policy = select_kv_heads(m, scores, fraction=0.5, sink=4, window=256)      # doctest: +SKIP
    >>> with interp.compress(m, policy) as comp:                                     # doctest: +SKIP
    ...     out = m.hf.generate(**batch, max_new_tokens=16)
    >>> comp.cache.stored_bytes() <= policy.kv_bytes(out.shape[1], batch=len(out))  # doctest: +SKIP

Every forward pass that starts a fresh sequence (no cache, or an empty one) gets a new
`CompressedCache`; `generate` then carries it through decoding. The compression probe is opened
as a capture and moved to the front of the engine's active captures, so it composes with
captures of `z` / residual sites and with zero / mean ablation (`edit_z`); probes that need every
head's full keys (patterns, q/k/v, statistics, weight editors) are refused with a clear error.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from interp.capture import capture, context
from interp.intervene.compress.attention import Compression
from interp.intervene.compress.cache import CompressedCache
from interp.intervene.compress.policy import KVPolicy, PolicyError
from interp.models.model import as_model


@contextmanager
def compress(model, policy: KVPolicy) -> Iterator[Compression]:
    """Apply `policy` to every forward pass in the block (see the module docstring)."""
    m = as_model(model)
    if not isinstance(policy, KVPolicy):
        raise PolicyError("compress(model, policy) needs a KVPolicy; build one with select_kv_heads or "
                          "load_tsv.")
    policy.check_model(m.adapter.n_layers(), m.adapter.n_kv_heads)
    probe = Compression(policy)
    opened = {}  # the capture's session, once open: the cache hook acts only for passes of its context
    new_cache = _cache_hook(probe)

    def hook(module, args, kwargs):
        session = opened.get("session")
        if session is not None and context.is_open_here(session):
            return new_cache(module, args, kwargs)

    handle = m.hf.register_forward_pre_hook(hook, with_kwargs=True)  # before the capture's own step hook
    try:
        with capture(m, probes=[probe]):
            opened["session"] = next(s for s in context.active() if probe in s.probes)
            context.move_to_front(opened["session"])  # before any other capture's output-computing probe
            yield probe
    finally:
        handle.remove()


def _cache_hook(probe: Compression):
    def hook(module, args, kwargs):
        cache = kwargs.pop("past_key_values", None)
        cache = kwargs.get("cache", cache)
        if isinstance(cache, CompressedCache):
            probe.cache = cache
        elif cache is None or cache.get_seq_length() == 0:
            probe.cache = CompressedCache(probe.policy)
        else:
            raise PolicyError("interp.compress cannot take over a cache that already holds tokens; start the "
                              "sequence inside the compress block.")
        kwargs["cache"] = probe.cache
        return args, kwargs

    return hook
