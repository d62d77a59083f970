"""ACT-style attention calibration (Yu et al. 2024): damp hidden attention sinks at inference time.

For each chosen (layer, head) and each input, a *sink* is a key whose column mean — the attention
it receives averaged over the queries that can see it — exceeds `tau`; one sink is exempt, the
ordinary sink the model needs: `exempt="first_sink"` (default, as ACT's official code) keeps each
head's first detected sink, `"first_token"` keeps the input's first real token whether or not it
is a sink, `"none"` keeps nothing. Every row then scales its
attention on the sinks by `beta` and gives the removed mass back to the other visible keys in
proportion to their attention, so each row still sums to 1:

    w'[k] = beta * w[k]                               k a sink
    w'[k] = w[k] * (1 + (1 - beta) * S / R)           otherwise   (S = sink mass, R = the rest)

A row whose whole mass sits on sinks (R = 0) is left as it was.

    >>> cal = Calibration(heads=[(5, 2), (9, 0)], beta=0.4, tau=0.1)           # doctest: +SKIP
    >>> with calibrate(m, cal):                                                 # doctest: +SKIP
    ...     out = m.hf.generate(**m.encode(["Review: great fun.\\nSentiment:"]), max_new_tokens=3)
    >>> cal.save("sst2.calibration.json")                                      # doctest: +SKIP
    >>> Calibration.load("sst2.calibration.json").check(m)                     # doctest: +SKIP

Batched, left-padded inputs are exact: padding keys are seen by no query, so they are never sinks
and get no mass. KV-cached generation follows the *prefill rule*: sinks are found once, on the
forward pass that has no cache (the prompt), from all of its rows, and are kept fixed while
decoding; the keys generated later are never sinks. (ACT's decoding path recomputes "column means"
from the single new row, so any key a decoding step attends to by more than tau gets damped.) A
forward pass with cached keys but no prefill seen by this calibrator is an error, not a guess.

Memory: sink detection streams column statistics through `interp.kernels` (O(batch x head x key)
kept). The default path lets the capture engine recompute the calibrated heads' weights in full
(`batch x heads x query x key` fp32 per layer, transient) so pattern recorders see calibrated
attention; `stream=True` instead rewrites those heads' outputs a chunk of query rows at a time
(O(chunk x key)), for long prompts, and recorders then see the model's own attention.
"""

import json
import operator
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.axes import HeadOutput, Pattern, parse_head
from interp.capture.budget import chunk_rows
from interp.capture.call import AttentionCall
from interp.capture.probe import Probe
from interp.capture.session import Recording, capture
from interp.capture.stats import effective_mask
from interp.errors import InterpError
from interp.kernels import all_stats
from interp.kernels.reference import rows_per_chunk
from interp.models.model import as_model

HeadList = Sequence[tuple[int, int]]
RULES = ("prefill",)  # how sinks behave during KV-cached decoding (see the module docstring)
EXEMPT = ("first_sink", "first_token", "none")  # which sink is left undamped (see the module docstring)
SHAPE_FIELDS = ("n_layers", "n_heads", "n_kv_heads", "head_dim", "d_model")


class CalibrationError(InterpError, ValueError):
    """A calibration with impossible settings, or one made for a different model."""


def check_beta_tau(beta: float, tau: float) -> None:
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or isinstance(tau, bool) \
            or not isinstance(tau, (int, float)):
        raise CalibrationError(f"beta and tau must be numbers; got beta={beta!r}, tau={tau!r}.")
    if not 0.0 <= float(beta) <= 1.0:
        raise CalibrationError(f"beta={beta} is outside [0, 1]: it is the factor kept on sink attention "
                               "(ACT uses 0.4; 1 leaves attention unchanged, 0 removes sinks).")
    if not 0.0 < float(tau) < 1.0:
        raise CalibrationError(f"tau={tau} is outside (0, 1): it is the column-mean threshold above which a "
                               "key counts as a sink (ACT uses 0.1).")


def check_exempt(exempt: str) -> None:
    if exempt not in EXEMPT:
        raise CalibrationError(f"exempt={exempt!r} is not a sink exemption rule; choose one of "
                               f"{', '.join(EXEMPT)} (first_sink: ACT's official code).")


def _head_pairs(heads) -> list[tuple[int, int]]:
    """`heads` as (layer, head) int pairs, or a `CalibrationError` naming what is wrong."""
    if isinstance(heads, (str, bytes)) or not isinstance(heads, (list, tuple)):
        raise CalibrationError("heads must be a list of [layer, head] pairs, e.g. [[12, 3], [14, 0]]; got "
                               f"{heads!r} (on the command line: --heads 12:3,14:0).")
    pairs = []
    for pair in heads:
        try:
            if isinstance(pair, (str, bytes)) or len(pair) != 2 or any(isinstance(x, bool) for x in pair):
                raise TypeError
            pairs.append((operator.index(pair[0]), operator.index(pair[1])))
        except TypeError:
            raise CalibrationError(f"heads must be [layer, head] pairs of integers; got {pair!r}.") from None
    return pairs


def model_identity(model) -> dict:
    """What a calibration file records about the model it was made for."""
    a = model.adapter
    return {"name": model.name, "family": a.family, "n_layers": a.n_layers(), "n_heads": a.n_heads,
            "n_kv_heads": a.n_kv_heads, "head_dim": a.head_dim, "d_model": a.d_model}


def detect_sinks(col_mean: Float[Tensor, "batch head key"], seen: Bool[Tensor, "batch key"], tau: float,
                 exempt: str = "first_sink") -> Bool[Tensor, "batch head key"]:
    """Keys whose column mean exceeds `tau`, less the exempt one (`EXEMPT`; keys nobody sees have mean 0).

    >>> mean = torch.tensor([[[0.05, 0.5, 0.2, 0.01]]])                     # key 0 is no sink here
    >>> detect_sinks(mean, torch.ones(1, 4, dtype=torch.bool), 0.1, "first_sink").int().tolist()
    [[[0, 0, 1, 0]]]
    >>> detect_sinks(mean, torch.ones(1, 4, dtype=torch.bool), 0.1, "first_token").int().tolist()
    [[[0, 1, 1, 0]]]
    """
    check_exempt(exempt)
    sinks = col_mean > tau
    if exempt == "first_token":
        first = seen.int().argmax(-1)  # the first key any query sees: the first real token
        sinks[torch.arange(sinks.shape[0]), :, first] = False
    elif exempt == "first_sink":  # each head's first detected sink (no sink: argmax is a key that is none)
        sinks.scatter_(-1, sinks.int().argmax(-1, keepdim=True), False)
    return sinks


def rebalance(weights: Pattern, sinks: Bool[Tensor, "batch head key"], beta: float) -> Pattern:
    """Scale sink columns by `beta` and give the removed mass to the other keys pro rata (rows keep their
    sum).

    >>> w = torch.tensor([[[[0.4, 0.2, 0.4]]]])                      # one row; key 1 is a sink
    >>> [round(x, 4) for x in rebalance(w, torch.tensor([[[False, True, False]]]), 0.5)[0, 0, 0].tolist()]
    [0.45, 0.1, 0.45]
    """
    s = sinks[:, :, None, :].to(weights.dtype)  # [batch, head, 1, key]
    sink_mass = (weights * s).sum(-1, keepdim=True)
    rest = (weights * (1 - s)).sum(-1, keepdim=True)
    give = torch.where(rest > 0, (1 - beta) * sink_mass / rest.clamp_min(torch.finfo(weights.dtype).tiny),
                       0.0)
    keep = torch.where(rest > 0, torch.full_like(rest, beta), torch.ones_like(rest))
    return weights * (s * keep + (1 - s) * (1 + give))


@dataclass
class Calibrator(Probe):
    """The capture-engine editor behind `calibrate`: sinks per input, rows rebalanced (see module doc)."""

    heads: HeadList
    beta: float = 0.4
    tau: float = 0.1
    exempt: str = "first_sink"
    stream: bool = False
    max_memory: int | str | None = None
    stack: str | None = None
    #: layer -> query heads calibrated there
    by_layer: dict = field(init=False, repr=False, default_factory=dict)
    #: layer -> (sink mask [batch, head, key] on absolute key positions, from the latest prefill)
    sinks: dict = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self):
        check_beta_tau(self.beta, self.tau)
        check_exempt(self.exempt)

    def begin(self, model) -> None:
        adapter = model.adapter
        self.stack = self.stack or adapter.main_stack
        by_layer: dict[int, list[int]] = {}
        for pair in self.heads:
            if len(pair) != 2:
                raise CalibrationError(f"heads must be (layer, head) pairs; got {pair!r}.")
            layer = adapter.check_layer(int(pair[0]), self.stack)
            by_layer.setdefault(layer, []).append(adapter.check_head(int(pair[1])))
        self.by_layer = {layer: torch.tensor(sorted(set(h))) for layer, h in by_layer.items()}
        self.sinks = {}

    def wants(self, stack: str, layer: int) -> bool:
        return stack == self.stack and layer in self.by_layer

    def edited_heads(self, call: AttentionCall) -> Tensor | None:
        if self.stream:
            return None
        self._find_sinks(call)
        return self.by_layer[call.layer]

    def edit_weights(self, call: AttentionCall, weights: Pattern, heads: Tensor) -> Pattern:
        return rebalance(weights, self._current_sinks(call, heads), self.beta)

    @torch.no_grad()
    def edit_z(self, call: AttentionCall, z: HeadOutput) -> HeadOutput:
        if not self.stream:
            return z
        self._find_sinks(call)
        heads = self.by_layer[call.layer].to(z.device)
        sinks = self._current_sinks(call, heads)
        v = call.value[:, call.kv_head_of(heads)].float()
        budget = chunk_rows(self.max_memory, batch=call.batch, heads=len(heads), k_len=call.k_len)
        chunk = budget or rows_per_chunk(call.batch, len(heads), call.k_len)
        z = z.clone()
        for start in range(0, call.q_len, chunk):
            rows = slice(start, min(start + chunk, call.q_len))
            w = rebalance(call.weights(heads, rows), sinks, self.beta)
            z[:, rows, heads] = torch.matmul(w, v).transpose(1, 2).to(z.dtype)
        return z

    # -- sinks ------------------------------------------------------------------------------------

    @torch.no_grad()
    def _find_sinks(self, call: AttentionCall) -> None:
        """On a prefill (no cached keys), detect sinks from streamed column means; else keep the last ones."""
        if call.k_len > call.q_len:  # cached keys: a decoding step (or a later chunk) of the same prompt
            if call.layer not in self.sinks or self.sinks[call.layer].shape[0] != call.batch:
                raise CalibrationError(
                    "calibration saw a KV-cached forward pass without the prefill that built its cache; open "
                    "the calibration before the prompt's first forward pass (wrap the whole generate call)."
                )
            return
        heads = self.by_layer[call.layer].to(call.query.device)
        q = call.query[:, heads]
        k = call.key[:, call.kv_head_of(heads)]  # one kv head per calibrated query head
        chunk = chunk_rows(self.max_memory, batch=call.batch, heads=len(heads), k_len=call.k_len)
        _, cols, _ = all_stats(q, k, effective_mask(call), scaling=call.scaling, is_causal=call.is_causal,
                               softcap=call.softcap, columns=True, chunk=chunk)
        sinks = detect_sinks(cols.mean, cols.count > 0, self.tau, self.exempt)
        absolute = torch.zeros(call.batch, len(heads), call.key_offset + call.k_len, dtype=torch.bool,
                               device=sinks.device)
        absolute[..., call.key_offset:] = sinks
        self.sinks[call.layer] = absolute

    def _current_sinks(self, call: AttentionCall, heads: Tensor) -> Bool[Tensor, "batch head key"]:
        """The layer's sinks on this call's keys (later keys are never sinks), for `heads`."""
        known = self.sinks[call.layer]
        out = torch.zeros(call.batch, known.shape[1], call.k_len, dtype=torch.bool, device=known.device)
        stop = min(known.shape[-1], call.key_offset + call.k_len)
        if stop > call.key_offset:
            out[..., : stop - call.key_offset] = known[..., call.key_offset:stop]
        layer_heads = self.by_layer[call.layer].to(heads.device)
        pick = torch.nonzero(heads[:, None] == layer_heads[None, :])[:, 1]
        return out[:, pick.to(out.device)]


@dataclass
class Calibration:
    """A persistent calibration: which heads, `beta`, `tau`, the decoding rule, and the model it fits.

    `save` writes a small JSON file; `load` reads it back; `check(model)` refuses a file made for a
    model of another shape (and warns on another name of the same shape).
    """

    heads: list[tuple[int, int]]
    beta: float = 0.4
    tau: float = 0.1
    exempt: str = "first_sink"
    rule: str = "prefill"
    model: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)  # provenance: task, dev scores, search settings

    def __post_init__(self):
        self.heads = _head_pairs(self.heads)
        check_beta_tau(self.beta, self.tau)
        check_exempt(self.exempt)
        if not isinstance(self.model, dict) or not isinstance(self.meta, dict):
            raise CalibrationError("a calibration's `model` and `meta` must be JSON objects (dicts).")
        if self.rule not in RULES:
            raise CalibrationError(f"unknown decoding rule {self.rule!r}; known: {', '.join(RULES)}.")

    def check(self, model) -> "Calibration":
        """Raise `CalibrationError` if this calibration was made for a model of another shape."""
        if not self.model:
            return self
        have = model_identity(as_model(model))
        wrong = {f: (self.model[f], have[f]) for f in SHAPE_FIELDS
                 if f in self.model and self.model[f] != have[f]}
        if wrong:
            detail = ", ".join(f"{f} {a} (file) vs {b} (model)" for f, (a, b) in wrong.items())
            raise CalibrationError(
                f"this calibration was made for {self.model.get('name', 'another model')!r} and does not fit "
                f"{have['name']!r}: {detail}. Search heads for this model again (interp calibrate MODEL ...)."
            )
        if self.model.get("name") and self.model["name"] != have["name"]:
            warnings.warn(f"calibration made for {self.model['name']!r} applied to {have['name']!r} (same "
                          "shape).",
                          stacklevel=2)
        return self

    def editor(self, *, stream: bool = False, max_memory: int | str | None = None) -> Calibrator:
        return Calibrator(self.heads, self.beta, self.tau, self.exempt, stream=stream, max_memory=max_memory)

    def to_json(self) -> dict:
        out = asdict(self)
        out["heads"] = [list(h) for h in self.heads]
        return out

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CalibrationError(f"no calibration file at {path}; create one with `interp "
                                   "calibrate`.") from None
        except IsADirectoryError:
            raise CalibrationError(f"{path} is a folder; give the calibration.json file inside it.") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CalibrationError(f"{path} is not a calibration JSON file ({err}).") from None
        if not isinstance(data, dict):
            raise CalibrationError(f"{path} is not a calibration file: it holds a JSON "
                                   f"{type(data).__name__}, not an object; create one with `interp "
                                   "calibrate`.")
        if "exclude_first" in data:  # files written before `exempt`: True meant the first real token
            data["exempt"] = "first_token" if data.pop("exclude_first") else "none"
        unknown = set(data) - {f for f in cls.__dataclass_fields__}
        if unknown or "heads" not in data:
            raise CalibrationError(f"{path} is not a calibration file (fields {sorted(data)}).")
        try:
            return cls(**data)
        except CalibrationError as err:
            raise CalibrationError(f"{path}: {err}") from None


def parse_heads(spec: str) -> list[tuple[int, int]]:
    """`"12.3,14.0"` -> `[(12, 3), (14, 0)]` (head labels, see `interp.axes.parse_head`; `12:3` also reads).

    >>> parse_heads("12.3, 14:0")
    [(12, 3), (14, 0)]
    """
    heads = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        try:
            heads.append(parse_head(part))
        except InterpError:
            raise CalibrationError(f"cannot read head {part!r}; write heads as LAYER.HEAD labels, e.g. "
                                   f"'12.3,14.0'.") from None
    return heads


@contextmanager
def calibrate(
    model,
    calibration: Calibration | HeadList,
    *,
    beta: float | None = None,
    tau: float | None = None,
    exempt: str | None = None,
    stream: bool = False,
    probes: Sequence[Probe] = (),
    max_memory: int | str | None = None,
) -> Iterator[Recording]:
    """Run `model` with calibrated attention inside the block (a capture with one editor).

    `calibration` is a `Calibration` or a list of (layer, head) pairs (then `beta`/`tau`/`exempt`
    default to ACT's 0.4 / 0.1 / "first_sink"); given ones override the calibration's. Extra `probes` record
    in the same capture. Memory: see the module docstring.

        >>> with calibrate(m, [(5, 2)]) as rec:                              # doctest: +SKIP
        ...     logits = m(**batch).logits
    """
    model = as_model(model)
    if not isinstance(calibration, Calibration):
        calibration = Calibration(list(calibration))
    calibration = replace(calibration, beta=calibration.beta if beta is None else beta,
                          tau=calibration.tau if tau is None else tau,
                          exempt=calibration.exempt if exempt is None else exempt)
    calibration.check(model)
    with capture(model, edits=[calibration.editor(stream=stream, max_memory=max_memory)],
                 probes=list(probes)) as rec:
        yield rec


__all__ = [
    "Calibration",
    "CalibrationError",
    "Calibrator",
    "calibrate",
    "detect_sinks",
    "model_identity",
    "parse_heads",
    "rebalance",
]
