"""Classic head detectors: previous-token, duplicate-token and induction heads, entropy, distance.

Each detector is the attention mass a head puts on the keys its role predicts, averaged over the
query rows where that role is defined:

| metric            | target keys of query `i`                                      | rows counted           |
|-------------------|---------------------------------------------------------------|------------------------|
| `previous_token`  | key `i - 1`                                                   | rows with a real `i-1` |
| `duplicate_token` | earlier keys `j < i` holding the same token as `i`            | rows with such a key   |
| `induction`       | keys `j <= i` right after an earlier copy: `tok[j-1] == tok[i]` | rows with such a key |
| `entropy`         | `-sum_j A[i, j] log A[i, j]` (nats)                           | every real row         |
| `mean_distance`   | `sum_j A[i, j] (i - j)` (tokens back)                         | every real row         |

Two probe sets: repeated random tokens (`[bos] x x`, the textbook induction setting) and windows
of natural text (the default passage below, or your own `texts`). Metrics on text carry a `_text`
suffix, except `entropy` and `mean_distance`, which are only measured on text.

    >>> import interp
    >>> m = interp.load("smollm2")                                   # doctest: +SKIP
    >>> res = detect_heads(m, HeadsConfig(n_random=4, half_len=32))  # doctest: +SKIP
    >>> res.top("induction", 3)                                      # doctest: +SKIP
    [(5, 3, 0.81), ...]

Memory: patterns are never stored. Per layer the probe recomputes `batch x head x chunk x key`
fp32 weights for `chunk` query rows at a time and folds them into per-head sums.
"""

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.axes import Pattern, TokenIds
from interp.capture import capture
from interp.capture.call import AttentionCall
from interp.capture.probe import Probe
from interp.errors import InterpError
from interp.models.model import as_model

ROLE_METRICS = ("previous_token", "duplicate_token", "induction")
ROW_METRICS = ("entropy", "mean_distance")
METRICS = ROLE_METRICS + tuple(f"{m}_text" for m in ROLE_METRICS) + ROW_METRICS

# A public-domain passage (Jane Austen, "Pride and Prejudice", 1813, chapter 1) for natural-text scores.
DEFAULT_TEXT = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be "
    "in want of a wife. However little known the feelings or views of such a man may be on his first "
    "entering a neighbourhood, this truth is so well fixed in the minds of the surrounding families, that "
    "he is considered the rightful property of some one or other of their daughters. \"My dear Mr. Bennet,\" "
    "said his lady to him one day, \"have you heard that Netherfield Park is let at last?\" Mr. Bennet "
    "replied that he had not. \"But it is,\" returned she; \"for Mrs. Long has just been here, and she told "
    "me all about it.\" Mr. Bennet made no answer. \"Do you not want to know who has taken it?\" cried his "
    "wife impatiently. \"You want to tell me, and I have no objection to hearing it.\" This was invitation "
    "enough. \"Why, my dear, you must know, Mrs. Long says that Netherfield is taken by a young man of large "
    "fortune from the north of England; that he came down on Monday in a chaise and four to see the place, "
    "and was so much delighted with it, that he agreed with Mr. Morris immediately; that he is to take "
    "possession before Michaelmas, and some of his servants are to be in the house by the end of next "
    "week.\" \"What is his name?\" \"Bingley.\" \"Is he married or single?\" \"Oh! Single, my dear, to be "
    "sure! A single man of large fortune; four or five thousand a year. What a fine thing for our girls!\" "
    "\"How so? How can it affect them?\" \"My dear Mr. Bennet,\" replied his wife, \"how can you be so "
    "tiresome! You must know that I am thinking of his marrying one of them.\" \"Is that his design in "
    "settling here?\" \"Design! Nonsense, how can you talk so! But it is very likely that he may fall in "
    "love with one of them, and therefore you must visit him as soon as he comes.\""
)


@dataclass
class HeadsConfig:
    """Settings of `detect_heads` (the defaults take ~1 min for SmolLM2-135M on 2 CPU cores).

    n_random: repeated random-token sequences; half_len: tokens in each half.
    texts: natural-text passages (None: `DEFAULT_TEXT`); text_tokens: window length; n_text: windows.
    batch_size: sequences per forward pass; chunk_rows: query rows per weight recomputation.
    """

    n_random: int = 8
    half_len: int = 48
    texts: Sequence[str] | None = None
    text_tokens: int = 96
    n_text: int = 4
    batch_size: int = 8
    chunk_rows: int = 128
    seed: int = 0

    def check(self) -> None:
        for name in ("n_random", "half_len", "text_tokens", "n_text", "batch_size", "chunk_rows"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InterpError(f"HeadsConfig.{name}={getattr(self, name)!r}: use a positive integer.")
        if self.half_len < 2 or self.text_tokens < 2:
            raise InterpError("HeadsConfig.half_len and text_tokens must be at least 2 tokens.")


@dataclass
class HeadScores:
    """Per-head detector scores: `scores[metric]` is `[layer, head]` (see the module table)."""

    scores: dict[str, Float[Tensor, "layer head"]]
    config: dict = field(default_factory=dict)

    def top(self, metric: str, k: int = 5) -> list[tuple[int, int, float]]:
        """The `k` highest-scoring heads as (layer, head, score)."""
        if metric not in self.scores:
            raise InterpError(f"unknown metric {metric!r}; choose one of {', '.join(self.scores)}.")
        s = self.scores[metric]
        values, flat = s.flatten().topk(min(k, s.numel()))
        return [(int(i) // s.shape[1], int(i) % s.shape[1], float(v)) for v, i in zip(values, flat)]

    def to_json(self) -> dict:
        return {"scores": {k: v.tolist() for k, v in self.scores.items()}, "config": self.config}


# ---------------------------------------------------------------------------------------------------
# The reduction: attention weights + tokens -> per-head sums, one chunk of query rows at a time.


def role_masks(
    tokens: TokenIds, real: Bool[Tensor, "batch pos"], rows: slice, k_len: int
) -> dict[str, Bool[Tensor, "batch query key"]]:
    """Boolean target keys of each role for the query rows `rows` (padded coordinates)."""
    n = tokens.shape[1]
    q = torch.arange(n, device=tokens.device)[rows]
    k = torch.arange(k_len, device=tokens.device)
    tok = tokens.masked_fill(~real, -1)
    tq, rq = tok[:, rows], real[:, rows]
    same = (tq[:, :, None] == tok[:, None, :]) & rq[:, :, None] & real[:, None, :]
    prev_tok = torch.cat([torch.full_like(tok[:, :1], -2), tok[:, :-1]], dim=1)  # token before key j
    prev_real = torch.cat([torch.zeros_like(real[:, :1]), real[:, :-1]], dim=1)
    after = ((tq[:, :, None] == prev_tok[:, None, :]) & rq[:, :, None] & prev_real[:, None, :]
             & real[:, None, :])
    return {
        "previous_token": (k[None, None, :] == q[None, :, None] - 1) & rq[:, :, None] & real[:, None, :],
        "duplicate_token": same & (k[None, None, :] < q[None, :, None]),
        "induction": after & (k[None, None, :] <= q[None, :, None]),
    }


class _LayerSums:
    """Running per-head sums and row counts of every metric for one layer (fp64, on the CPU)."""

    def __init__(self):
        self.total: dict[str, Tensor] = {}
        self.rows: dict[str, Tensor] = {}

    def add(self, name: str, per_row: Float[Tensor, "batch head query"], valid: Bool[Tensor, "batch query"]):
        s = (per_row * valid[:, None, :]).sum(dim=(0, 2)).double().cpu()
        c = valid.sum().double().cpu()
        self.total[name] = self.total.get(name, 0) + s
        self.rows[name] = self.rows.get(name, 0) + c


def accumulate(
    sums: _LayerSums, weights: Pattern, tokens: TokenIds, real: Bool[Tensor, "batch pos"], rows: slice,
    masks: dict[str, Tensor] | None = None,
) -> None:
    """Fold the weights of query rows `rows` (`[batch, head, len(rows), key]`) into `sums`.

    `masks` are `role_masks(tokens, real, rows, key)`, passed in when several layers share them.
    """
    masks = masks or role_masks(tokens, real, rows, weights.shape[-1])
    for name, target in masks.items():
        sums.add(name, (weights * target[:, None]).sum(-1), target.any(-1))
    rq = real[:, rows]
    q = torch.arange(tokens.shape[1], device=weights.device)[rows].float()
    dist = (q[:, None] - torch.arange(weights.shape[-1], device=weights.device).float()[None, :]).clamp(min=0)
    sums.add("entropy", -torch.special.xlogy(weights, weights).sum(-1), rq)
    sums.add("mean_distance", (weights * dist).sum(-1), rq)


class DetectorProbe(Probe):
    """Records nothing big: per layer, folds exact attention weights into per-head metric sums.

    Set `tokens`/`real` before each forward pass (`feed`); `sums[layer]` accumulates across passes.
    """

    def __init__(self, stack: str | None = None, chunk_rows: int = 128):
        self.stack, self.chunk_rows = stack, chunk_rows
        self.sums: dict[int, _LayerSums] = {}
        self.tokens: Tensor | None = None
        self.real: Tensor | None = None
        self._masks: dict[tuple, dict[str, Tensor]] = {}  # role masks per row chunk, shared by all layers

    def begin(self, model) -> None:
        self.stack = self.stack or model.adapter.main_stack

    def feed(self, tokens: TokenIds, real: Bool[Tensor, "batch pos"]) -> None:
        self.tokens, self.real = tokens, real.bool()
        self._masks.clear()

    def wants(self, stack: str, layer: int) -> bool:
        return stack == self.stack

    def record(self, call: AttentionCall, z) -> None:
        if call.q_len != self.tokens.shape[1] or call.k_len != self.tokens.shape[1]:
            raise InterpError("DetectorProbe scores whole prompts in one forward pass (no KV cache or "
                              "generate).")
        sums = self.sums.setdefault(call.layer, _LayerSums())
        tokens, real = self.tokens.to(call.query.device), self.real.to(call.query.device)
        for start in range(0, call.q_len, self.chunk_rows):
            rows = slice(start, min(start + self.chunk_rows, call.q_len))
            key = (rows.start, rows.stop, call.k_len, str(call.query.device))
            if key not in self._masks:
                self._masks[key] = role_masks(tokens, real, rows, call.k_len)
            accumulate(sums, call.weights(None, rows), tokens, real, rows, self._masks[key])


# ---------------------------------------------------------------------------------------------------
# Probe sets and the runner.


def repeated_random_tokens(
    n: int, half_len: int, vocab_size: int, *, bos: int | None = None, seed: int = 0, low: int = 100
) -> TokenIds:
    """`n` sequences `[bos] x x` of `half_len` random token ids (from `low`, to skip special tokens)."""
    g = torch.Generator().manual_seed(seed)
    if vocab_size - low < 2 * half_len:
        low = 0
    x = torch.stack([torch.randperm(vocab_size - low, generator=g)[:half_len] + low for _ in range(n)])
    ids = torch.cat([x, x], dim=1)
    if bos is not None:
        ids = torch.cat([torch.full((n, 1), bos), ids], dim=1)
    return ids


def text_windows(tokenizer, texts: Sequence[str], n: int, length: int, *, bos: int | None = None) -> TokenIds:
    """Up to `n` windows of `length` tokens from `texts` (tokenized and concatenated), each after `bos`."""
    ids: list[int] = []
    for text in texts:
        ids += tokenizer(text, add_special_tokens=False)["input_ids"]
    n_fit = len(ids) // length
    if n_fit == 0:
        raise InterpError(f"the texts hold {len(ids)} tokens, fewer than one window of {length}; give more "
                          f"text or a smaller text_tokens.")
    windows = torch.tensor(ids[: min(n, n_fit) * length]).reshape(-1, length)
    if bos is not None:
        windows = torch.cat([torch.full((len(windows), 1), bos), windows], dim=1)
    return windows


Progress = Callable[[int, int], None]


@dataclass
class Sums:
    """Per-head metric sums over some batches: `total[m]` `[layer, head]` and `rows[m]` `[layer]` (fp64).

    Sums of disjoint batches add up (`a + b`), so a scan can save each batch's sums and resume.
    """

    total: dict[str, Float[Tensor, "layer head"]]
    rows: dict[str, Float[Tensor, " layer"]]

    def __add__(self, other: "Sums") -> "Sums":
        return Sums({k: self.total[k] + other.total[k] for k in self.total},
                    {k: self.rows[k] + other.rows[k] for k in self.rows})

    def means(self, suffix: str = "") -> dict[str, Float[Tensor, "layer head"]]:
        return {f"{k}{suffix if k in ROLE_METRICS else ''}":
                (self.total[k] / self.rows[k].clamp(min=1)[:, None]).float()
                for k in self.total}

    def to_json(self) -> dict:
        return {"total": {k: v.tolist() for k, v in self.total.items()},
                "rows": {k: v.tolist() for k, v in self.rows.items()}}

    @staticmethod
    def from_json(d: dict) -> "Sums":
        as64 = lambda x: torch.tensor(x, dtype=torch.float64)
        return Sums({k: as64(v) for k, v in d["total"].items()}, {k: as64(v) for k, v in d["rows"].items()})


def _collect(per_layer: dict[int, _LayerSums]) -> Sums:
    layers = sorted(per_layer)
    names = per_layer[layers[0]].total
    return Sums({n: torch.stack([per_layer[i].total[n] for i in layers]) for n in names},
                {n: torch.stack([torch.as_tensor(per_layer[i].rows[n]) for i in layers]) for n in names})


@torch.no_grad()
def score_batch(model, ids: TokenIds, chunk_rows: int = 128) -> Sums:
    """Metric sums of one equal-length, unpadded batch of token ids (every layer, every head)."""
    if model.backend == "tl":
        per_layer: dict[int, _LayerSums] = {}
        with capture(model, patterns=True) as rec:
            model.bridge(ids.to(model.device))
        real = torch.ones_like(ids, dtype=torch.bool)
        for layer in rec.patterns:
            accumulate(per_layer.setdefault(layer, _LayerSums()), rec.patterns[layer].float().cpu(), ids,
                       real, slice(None))
        return _collect(per_layer)
    probe = DetectorProbe(chunk_rows=chunk_rows)
    probe.feed(ids, torch.ones_like(ids, dtype=torch.bool))
    with capture(model, probes=[probe]):
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return _collect(probe.sums)


def probe_sets(model, config: HeadsConfig) -> dict[str, list[TokenIds]]:
    """The two probe sets as lists of batches: "random" and "text"."""
    tok = model.tokenizer
    bos = tok.bos_token_id
    vocab = min(len(tok), model.hf.config.vocab_size)
    rand = repeated_random_tokens(config.n_random, config.half_len, vocab, bos=bos, seed=config.seed)
    text = text_windows(tok, config.texts or [DEFAULT_TEXT], config.n_text, config.text_tokens, bos=bos)
    return {"random": list(torch.split(rand, config.batch_size)),
            "text": list(torch.split(text, config.batch_size))}


def scores_from_sums(random: Sums | None, text: Sums | None) -> dict[str, Float[Tensor, "layer head"]]:
    """Final per-head scores: role metrics on random tokens; roles (`_text`), entropy, distance on text."""
    scores = {}
    if random is not None:
        scores.update({k: v for k, v in random.means().items() if k in ROLE_METRICS})
    if text is not None:
        scores.update(text.means("_text"))
    return scores


def config_json(config: HeadsConfig) -> dict:
    cfg = {k: v for k, v in asdict(config).items() if k != "texts"}
    cfg["texts"] = "default" if config.texts is None else f"{len(config.texts)} custom passages"
    return cfg


@torch.no_grad()
def detect_heads(model, config: HeadsConfig | None = None, *, progress: Progress | None = None) -> HeadScores:
    """Score every head of `model` as previous-token / duplicate-token / induction head, plus entropy
    and mean attention distance (see the module docstring). `progress(done, total)` is called per batch.
    """
    config = config or HeadsConfig()
    config.check()
    model = as_model(model)
    data = probe_sets(model, config)
    total, done, sums = sum(map(len, data.values())), 0, {}
    for name, batches in data.items():
        for ids in batches:
            part = score_batch(model, ids, config.chunk_rows)
            sums[name] = part if name not in sums else sums[name] + part
            done += 1
            if progress:
                progress(done, total)
    return HeadScores(scores_from_sums(sums.get("random"), sums.get("text")), config_json(config))


__all__ = [
    "DEFAULT_TEXT",
    "METRICS",
    "DetectorProbe",
    "HeadScores",
    "HeadsConfig",
    "Sums",
    "accumulate",
    "detect_heads",
    "probe_sets",
    "repeated_random_tokens",
    "role_masks",
    "score_batch",
    "scores_from_sums",
    "text_windows",
]
