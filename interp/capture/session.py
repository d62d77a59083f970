"""`interp.capture`: run a model with recorders and editors, leave it exactly as it was.

    >>> with interp.capture(m, patterns=[0, 5], z=True, resid_pre=[5]) as rec:   # doctest: +SKIP
    ...     m(**m.encode(["Ann loves pie. Who loves pie?"]))
    >>> rec.patterns[5].shape, rec.z[5].shape, rec.resid_pre[5].shape             # doctest: +SKIP

Each keyword takes `True` (all layers), a list of layers, or a configured probe
(`Patterns(layers=..., heads=..., queries=...)`, `Activations(what="q")`, `Residual(...)`,
`Stats(spans=..., top_k=...)` for streaming per-head statistics: `rec.stats.rows[layer]`,
`rec.stats.columns[layer]`). `max_memory="2GB"` bounds what the capture keeps: full patterns that
cannot fit are refused before the first layer runs, and statistics are chunked to fit.
`edits=` takes editors (ablation, calibration, patching) applied during the capture.
On exit — also on an exception — every hook is removed and the attention implementation restored.
Captures nest (the editors of all open captures apply; each capture counts its own forward passes)
and are private to the thread (or `contextvars` context) that opened them: see
`interp.capture.context`. A probe object belongs to one open capture at a time; it is reset when
a capture begins, so it can be reused by the next one.

A capture records one sequence: one forward pass, or the passes of one `generate` call, whose
records concatenate on the position axis. For several independent batches open one capture each
(or read each pass separately with `rec.patterns.steps(layer)`).

Backends: an `interp.Model` from `load(..., backend="hf" | "nnsight")` is captured through the
`AttentionInterface` function; `backend="tl"` reads TransformerLens hook points instead
(patterns, z, q/k/v and the residual sites; editors need the "hf" or "nnsight" backend).
Gradients are off inside the block unless `grad=True`.
"""

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch

from interp.capture import attention, context  # noqa: F401  (attention registers the "interp" functions)
from interp.capture.budget import MemoryBudget
from interp.capture.hooks import SITES, Residual
from interp.capture.probe import Probe, cached_tokens
from interp.capture.recorders import Activations, Patterns
from interp.capture.stats import Stats
from interp.capture.store import LayerMap
from interp.capture.tl import tl_probe
from interp.errors import UnsupportedArchitectureError
from interp.models.model import Model, as_model

ATTENTION_SITES = ("patterns", "q", "k", "v", "z")


@dataclass
class Recording:
    """What a capture recorded. Each field maps layer -> tensor (see `interp.axes` for the axes)."""

    patterns: LayerMap
    q: LayerMap
    k: LayerMap
    v: LayerMap
    z: LayerMap
    resid_pre: LayerMap
    resid_post: LayerMap
    attn_out: LayerMap
    mlp_out: LayerMap
    stats: Stats | None = None
    probes: list[Probe] = field(default_factory=list)
    n_forward: int = 0


@dataclass(eq=False)
class _Session:
    sites: dict
    probes: list[Probe]
    # id() of the model's configs (the mask builder finds its captures by them)
    configs: frozenset = frozenset()
    step: int = -1
    # tokens already in the cache handed to this forward pass (absolute position of its first)
    seen_before: int = 0
    seen: int = 0


def _probe_for(name: str, spec):
    """Turn a keyword value (True, a list of layers, or a probe) into a probe."""
    if spec is None or spec is False:
        return None
    if isinstance(spec, Probe):
        return spec
    layers = None if spec is True else [spec] if isinstance(spec, int) else list(spec)
    if name == "patterns":
        return Patterns(layers=layers)
    if name in ("q", "k", "v", "z"):
        return Activations(layers=layers, what=name)
    return Residual(site=name, layers=layers)


@contextmanager
def capture(
    model,
    *,
    patterns=None,
    q=None,
    k=None,
    v=None,
    z=None,
    resid_pre=None,
    resid_post=None,
    attn_out=None,
    mlp_out=None,
    stats=None,
    edits: list[Probe] = (),
    probes: list[Probe] = (),
    max_memory: int | str | None = None,
    grad: bool = False,
) -> Iterator[Recording]:
    model = as_model(model)
    specs = dict(patterns=patterns, q=q, k=k, v=v, z=z, resid_pre=resid_pre, resid_post=resid_post,
                 attn_out=attn_out, mlp_out=mlp_out)
    if model.backend == "tl":
        if edits:
            raise UnsupportedArchitectureError(
                "editors (ablation, calibration, patching) run through the HF attention function; load the "
                "model with backend='hf' or 'nnsight' to use them."
            )
        named = {n: tl_probe(n, s) for n, s in specs.items()}
    else:
        named = {n: _probe_for(n, s) for n, s in specs.items()}
    if stats is True:
        stats = Stats()
    elif isinstance(stats, (list, tuple, range)):
        stats = Stats(layers=list(stats))
    else:
        stats = stats or None
    all_probes = [p for p in [*named.values(), stats] if p is not None] + list(edits) + list(probes)
    if max_memory is not None:
        all_probes.append(MemoryBudget(max_memory, all_probes))
    main = model.adapter.main_stack
    empty = {n: LayerMap(main, cat_dim=1) for n in named}
    session = _Session(sites={}, probes=all_probes)
    handles, switched, claimed = [], False, False
    try:
        context.claim(all_probes)
        claimed = True
        for probe in all_probes:
            probe.begin(model)
        if model.backend != "tl":
            session.sites = {getattr(mod, "original_component", mod): site
                             for mod, site in model.adapter.attention_sites().items()}
            configs = context.configs_of(model.hf)
            session.configs = frozenset(configs)
            context.acquire(model.hf, configs)
            switched = True
        hooks = [(model.hf, "pre", _step_hook(session, model))]
        hooks += [hook for probe in all_probes for hook in probe.module_hooks(model)]
        for module, kind, fn in hooks:
            # passes of other threads / contexts are not this capture's
            fn = context.scoped(session, kind, fn)
            if kind == "pre":
                handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(fn, with_kwargs=True))
        context.push(session)
        rec = Recording(**{n: (p.data if p is not None else empty[n]) for n, p in named.items()},
                        stats=stats, probes=all_probes)
        with nullcontext() if grad else torch.no_grad():
            yield rec
        rec.n_forward = session.step + 1
    finally:
        context.pop(session)
        for handle in handles:
            handle.remove()
        if switched:
            context.release(model.hf)
        if claimed:
            try:
                for probe in all_probes:
                    probe.end()
            finally:
                context.unclaim(all_probes)


def _step_hook(session: _Session, model: Model):
    def hook(module, args, kwargs):
        session.step += 1
        name = "decoder_input_ids" if model.hf.config.is_encoder_decoder else "input_ids"
        ids = kwargs.get(name, args[0] if args and torch.is_tensor(args[0]) and name == "input_ids" else None)
        if ids is None:
            embeds = kwargs.get("decoder_inputs_embeds" if name != "input_ids" else "inputs_embeds")
            n_new = embeds.shape[1] if embeds is not None else 0
        else:
            n_new = ids.shape[-1]
        past = cached_tokens(kwargs)  # 0: a fresh sequence; > 0: a continuation of a cached prefix
        session.seen_before = past
        session.seen = session.seen_before + n_new
        if not model.hf.config.is_encoder_decoder:
            model.check_length(max(session.seen, past + n_new))

    return hook


__all__ = ["capture", "Recording", "SITES", "ATTENTION_SITES"]
