"""Recorders for the attention site: patterns, per-head q / k / v, and per-head outputs `z`.

    >>> import interp
    >>> m = interp.load("smollm2")                                        # doctest: +SKIP
    >>> with interp.capture(m, patterns=Patterns(layers=[3], heads=[0, 4], queries=-1)) as rec:
    ...     m(**m.encode(["The cat sat on the mat."]))                     # doctest: +SKIP
    >>> rec.patterns[3].shape                                             # doctest: +SKIP
    torch.Size([1, 2, 1, 8])

Memory: a full pattern is `batch x head x query x key` floats per layer — at 8k tokens one layer
of SmolLM2 is 2.4 GB in fp32. Select heads and query rows, store in a smaller `dtype`, offload to
`device="cpu"`, or use the streaming `Stats` recorder instead.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from interp.axes import HeadOutput
from interp.capture.call import AttentionCall
from interp.capture.probe import Probe
from interp.capture.store import LayerMap
from interp.errors import BadIndexError, IndexOutOfRangeError, as_index

Layers = Sequence[int] | None
Rows = int | slice | Sequence[int] | None


@dataclass
class _AttentionRecorder(Probe):
    """Shared selection logic: layers (None = all), heads (None = all), one stack."""

    layers: Layers = None
    heads: Sequence[int] | None = None
    stack: str | None = None
    dtype: torch.dtype | None = None
    device: torch.device | str | None = None
    data: LayerMap = field(init=False, repr=False)

    _cat_dim = 2
    _pad_last = False

    def __post_init__(self):
        for name in ("layers", "heads"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
                    raise BadIndexError(f"{type(self).__name__}({name}={value!r}): give a list of integers, "
                                        f"e.g. {name}=[5], or None for all.")
                setattr(self, name, [as_index(v, name[:-1]) for v in value])

    def begin(self, model) -> None:
        adapter = model.adapter
        self.stack = self.stack or adapter.main_stack
        if self.layers is not None:
            self.layers = [adapter.check_layer(layer, self.stack) for layer in self.layers]
        if self.heads is not None:
            self.heads = [adapter.check_head(h) for h in self.heads]
        self.data = LayerMap(adapter.main_stack, self._cat_dim, self._pad_last,
                             n_layers=len(adapter.blocks(adapter.main_stack)))

    def wants(self, stack: str, layer: int) -> bool:
        return stack == self.stack and (self.layers is None or layer in self.layers)

    def _head_index(self, call: AttentionCall) -> Tensor | None:
        return None if self.heads is None else torch.tensor(self.heads, device=call.query.device)

    def _keep(self, call: AttentionCall, tensor: Tensor, key_offset: int = 0) -> None:
        tensor = tensor.detach()
        if self.dtype is not None or self.device is not None:
            tensor = tensor.to(device=self.device or tensor.device, dtype=self.dtype or tensor.dtype)
        self.data.append(call.stack, call.layer, tensor, key_offset)


@dataclass
class Patterns(_AttentionRecorder):
    """Attention weights `[batch, head, query, key]` (fp32, as the model used them, edits included).

    `queries` selects prefill rows (an int, a slice or a list; None = all). Decoding steps (one new
    query each) are always recorded, so a generation's pattern covers every generated token.
    """

    queries: Rows = None
    _pad_last = True

    def __post_init__(self):
        super().__post_init__()
        q = self.queries
        if isinstance(q, slice):
            if not all(v is None or (isinstance(v, int) and not isinstance(v, bool))
                       for v in (q.start, q.stop, q.step)) \
                    or q.step == 0:
                raise BadIndexError(f"Patterns(queries={q!r}): a slice of integers with a non-zero step.")
        elif q is not None:
            self.queries = as_index(q, "query") if not isinstance(q, (list, tuple, range)) else \
                [as_index(v, "query") for v in q]

    def record(self, call: AttentionCall, z: HeadOutput) -> None:
        rows = _rows(self.queries, call.q_len) if call.step == 0 or call.q_len > 1 else slice(None)
        if isinstance(rows, slice):
            w = call.weights(self._head_index(call), rows)
        else:
            w = call.weights(self._head_index(call))[:, :, rows]
        self._keep(call, w, call.key_offset)


@dataclass
class Activations(_AttentionRecorder):
    """Per-head `q`, `k`, `v` or `z` (`what`), for the new positions of each forward pass.

    Axes: q `[batch, head, query, d_head]`; k, v `[batch, kv_head, key, d_head]` (only the keys this
    pass added to the cache, so steps concatenate into the full sequence); z `[batch, query, head, d_head]`.
    """

    what: str = "z"

    def __post_init__(self):
        super().__post_init__()
        if self.what not in ("q", "k", "v", "z"):
            raise ValueError(f"Activations(what={self.what!r}): choose one of 'q', 'k', 'v', 'z'.")
        self._cat_dim = 1 if self.what == "z" else 2
        self._at_out_proj = False

    def begin(self, model) -> None:
        super().begin(model)
        # Models with an output gate or sub-norm between attention and its projection (Qwen3-Next,
        # BitNet, ...): `z` is what the projection receives, so read it there.
        self._at_out_proj = self.what == "z" and model.adapter.stacks[self.stack].z_transform is not None

    def wants(self, stack: str, layer: int) -> bool:
        return not self._at_out_proj and super().wants(stack, layer)

    def module_hooks(self, model) -> list:
        if not self._at_out_proj:
            return []
        adapter = model.adapter
        layers = self.layers if self.layers is not None else adapter.attention_layers(self.stack)

        def hook_for(layer):
            def hook(module, args, kwargs):
                z = _first_arg(args, kwargs).unflatten(-1, (-1, adapter.head_dim))
                z = z if self.heads is None else z[:, :, self.heads]
                z = z.detach()
                if self.dtype is not None or self.device is not None:
                    z = z.to(device=self.device or z.device, dtype=self.dtype or z.dtype)
                self.data.append(self.stack, layer, z)

            return hook

        return [(adapter.out_proj(layer, self.stack), "pre", hook_for(layer)) for layer in layers]

    def record(self, call: AttentionCall, z: HeadOutput) -> None:
        heads = self._head_index(call)
        if self.what == "z":
            self._keep(call, z if heads is None else z[:, :, heads])
            return
        if self.what == "q":
            t = call.query
        else:
            t = (call.key if self.what == "k" else call.value)[:, :, call.k_len - call.q_len:]
            if heads is not None:
                heads = torch.unique(call.kv_head_of(heads))
        self._keep(call, t if heads is None else t[:, heads])


def _first_arg(args, kwargs) -> Tensor:
    return args[0] if args else next(iter(kwargs.values()))


def _rows(rows: Rows, q_len: int) -> slice | list[int]:
    if rows is None:
        return slice(None)
    if isinstance(rows, int):
        i = rows % q_len if -q_len <= rows < q_len else None
        if i is None:
            raise IndexOutOfRangeError(
                f"query position {rows} is out of range for a prompt of {q_len} tokens; "
                f"use 0..{q_len - 1} or a negative index from the end."
            )
        return slice(i, i + 1)
    if isinstance(rows, slice):
        picked = range(q_len)[rows]
        if not picked:
            raise IndexOutOfRangeError(f"queries={rows} selects no row of a prompt of {q_len} tokens.")
        return rows if picked.step == 1 else list(picked)
    for r in rows:
        if not -q_len <= r < q_len:
            raise IndexOutOfRangeError(f"query position {r} is out of range for a prompt of {q_len} tokens; "
                                       f"use 0..{q_len - 1} or a negative index from the end.")
    return [r % q_len for r in rows]
