"""Where captures are open: per-context sessions, the shared attention switch, probes in use.

A capture belongs to the context that opened it (its thread, or its asyncio task): its probes,
its editors and its module hooks act only on forward passes run in that context. A new thread
starts with no capture open; to run a forward pass of an open capture from a worker thread, run it
in a copy of the context (`contextvars.copy_context().run(fn)`).

transformers reads the attention implementation from the model's config, which every thread
shares, so routing attention through `interp` is model-wide. It is reference-counted under a lock:
the first capture on a model installs "interp", the last one to close restores the previous
implementation, and in between every pass that no capture of *its own* context watches runs the
previous implementation's attention and mask functions unchanged (an `sdpa` model computes
exactly what `sdpa` computes, an `eager` one what `eager` computes).

    >>> active()                      # no capture is open in this context
    ()
"""

import sys
import threading
import weakref
from contextvars import ContextVar

from interp.capture.probe import Probe
from interp.errors import InterpError, UnsupportedArchitectureError

IMPLEMENTATION = "interp"

# Sessions of the captures open in this context, innermost last (see `interp.capture.session`).
_ACTIVE: ContextVar[tuple] = ContextVar("interp_captures", default=())

_LOCK = threading.Lock()
_COUNT: dict[int, int] = {}  # id(hf model) -> captures open on it, in any context
# id(config) -> (config, its implementation before "interp")
_PREVIOUS: dict[int, tuple[weakref.ref, str]] = {}
_IN_USE: set[int] = set()  # id() of probes that belong to an open capture


class ProbeInUseError(InterpError):
    """A probe object was handed to a capture while it belongs to another open capture."""


def active() -> tuple:
    """The sessions of the captures open in the current context, innermost last."""
    return _ACTIVE.get()


def push(session) -> None:
    _ACTIVE.set((*_ACTIVE.get(), session))


def pop(session) -> None:
    _ACTIVE.set(tuple(s for s in _ACTIVE.get() if s is not session))


def move_to_front(session) -> None:
    """Make `session` the outermost capture of this context: its probes see each call first."""
    _ACTIVE.set((session, *(s for s in _ACTIVE.get() if s is not session)))


def is_open_here(session) -> bool:
    return any(s is session for s in _ACTIVE.get())


def scoped(session, kind: str, fn):
    """`fn` as a module hook that acts only for forward passes of `session`'s own context."""
    if kind == "pre":
        def pre(module, args, kwargs):
            if is_open_here(session):
                return fn(module, args, kwargs)

        return pre

    def post(module, args, kwargs, output):
        if is_open_here(session):
            return fn(module, args, kwargs, output)

    return post


def configs_of(hf) -> dict[int, object]:
    """Every config object the modules of `hf` read their attention implementation from."""
    out = {id(hf.config): hf.config}
    for module in hf.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            out.setdefault(id(config), config)
    return out


def acquire(hf, configs: dict[int, object]) -> None:
    """Route `hf`'s attention through "interp" (the first capture on it switches, later ones count)."""
    with _LOCK:
        n = _COUNT.get(id(hf), 0)
        if n == 0:
            current = hf.config._attn_implementation
            for key, config in configs.items():
                _PREVIOUS[key] = (weakref.ref(config), config._attn_implementation)
            if current != IMPLEMENTATION:
                hf.set_attn_implementation(IMPLEMENTATION)
                if hf.config._attn_implementation != IMPLEMENTATION:
                    hf.set_attn_implementation(current)
                    raise UnsupportedArchitectureError(
                        f"{type(hf).__name__} does not route attention through transformers' "
                        "AttentionInterface, so interp cannot capture it exactly. Supported: models whose "
                        "attention calls ALL_ATTENTION_FUNCTIONS (Llama, Mistral, Qwen2, Gemma, GPT-2, "
                        "GPT-NeoX, Whisper, ...)."
                    )
        _COUNT[id(hf)] = n + 1


def release(hf) -> None:
    """One capture on `hf` closed; the last one restores the implementation found by the first."""
    with _LOCK:
        n = _COUNT.pop(id(hf)) - 1
        if n:
            _COUNT[id(hf)] = n
            return
        previous = previous_implementation(hf.config)
        if previous not in (None, IMPLEMENTATION):
            hf.set_attn_implementation(previous)
        # `_PREVIOUS` entries stay: a pass that read "interp" just before the restore still finds them.
        for key in [k for k, (ref, _) in _PREVIOUS.items() if ref() is None]:
            del _PREVIOUS[key]


def previous_implementation(config) -> str | None:
    """The implementation `config` had before "interp" was installed (None: unknown)."""
    entry = _PREVIOUS.get(id(config))
    if entry is None or entry[0]() is not config:
        return None
    return entry[1]


def previous_attention(module):
    """The attention function `module` used before "interp", or None where that is interp's own path."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    impl = previous_implementation(getattr(module, "config", None))
    if impl is None or impl == IMPLEMENTATION:
        return None
    eager = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if impl == "eager" and eager is None:
        raise UnsupportedArchitectureError(
            f"{type(module).__name__} has no eager attention function interp can fall back to while another "
            f"thread captures; load the model with attn_implementation='sdpa'."
        )
    return ALL_ATTENTION_FUNCTIONS.get_interface(impl, eager)


def watched(config) -> bool:
    """Whether a capture of the current context is open on the model `config` belongs to."""
    return any(id(config) in s.configs for s in _ACTIVE.get())


def claim(probes) -> None:
    """Mark `probes` as part of an open capture; refuse one that already is."""
    with _LOCK:
        seen = set()
        for probe in probes:
            if id(probe) in _IN_USE or id(probe) in seen:
                raise ProbeInUseError(
                    f"this {type(probe).__name__} probe already belongs to an open capture (in this or "
                    f"another thread); give each capture its own probe object."
                )
            seen.add(id(probe))
        _IN_USE.update(seen)


def unclaim(probes) -> None:
    with _LOCK:
        for probe in probes:
            _IN_USE.discard(id(probe))


def is_editor(probe) -> bool:
    """Whether `probe` changes the forward pass (weights, `z`, or module outputs), not only records it."""
    flag = getattr(probe, "is_editor", None)
    if flag is not None:
        return bool(flag)
    cls = type(probe)
    return any(getattr(cls, name) is not getattr(Probe, name)
               for name in ("edited_heads", "edit_weights", "edit_z"))


def enclosing_editors(model) -> list:
    """Editors of the captures open on `model` in the current context, outermost first.

    An analyzer that takes a shortcut (prefix reuse, batching) checks them: the shortcut is exact
    only for editors it knows to act on each pass alone.
    """
    hf = getattr(model, "hf", model)
    return [p for s in _ACTIVE.get() if id(hf.config) in s.configs for p in s.probes if is_editor(p)]
