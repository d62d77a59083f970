"""Attention sinks per layer and head, from streamed column statistics (no attention pattern is stored).

Definitions (Gu et al. 2024; ACT, Yu et al. 2024):

- importance of key `k`: its *column mean* `alpha_k = sum_{t >= k} A[t, k] / (T - k + 1)`, the attention
  it receives averaged over the queries that can see it (with padding: over the real queries);
- `Sink_1^eps`: the fraction of (prompt, layer, head) whose first real token has `alpha > eps`
  (Gu et al. use eps = 0.3 on T = 64-token prompts);
- hidden sinks: keys *beyond* the first real token with `alpha > tau` (ACT uses tau = 0.1); we
  report which tokens they are, where, and how often across prompts, layers and heads.

    >>> report = find_sinks(m, passages(n=32))                        # doctest: +SKIP
    >>> report.sink_rate(0.3), report.token_table(5)                  # doctest: +SKIP
    >>> report.figure().write_html("sinks.html")                      # doctest: +SKIP

Memory: the `Stats` recorder keeps O(batch x head x query) numbers per layer plus a transient
`3 x batch x head x chunk x key` fp32 block (`SinkConfig.max_memory` bounds it); full patterns of
every layer are never built.
"""

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.capture.session import capture
from interp.capture.stats import Stats
from interp.errors import InterpError
from interp.models.model import as_model
from interp.parallel import is_main, map_units
from interp.progress import bar as progress_bar
from interp.resources import data_path

DEFAULT_TEXT = data_path("text")


@dataclass
class SinkConfig:
    """What to measure. `length` truncates every prompt to its first `length` tokens (Gu et al.: 64)."""

    epsilons: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7)
    tau: float = 0.1
    layers: Sequence[int] | None = None
    length: int | None = 64
    batch_size: int = 8
    max_memory: int | str | None = None

    def __post_init__(self):
        if not 0 < self.tau < 1 or any(not 0 < e < 1 for e in self.epsilons):
            raise InterpError(f"tau ({self.tau}) and epsilons ({self.epsilons}) must lie in (0, 1).")
        if self.length is not None and self.length < 2:
            raise InterpError(f"length must be >= 2 tokens (or None for whole prompts), got {self.length}.")


@dataclass
class HiddenSink:
    prompt: int
    layer: int
    head: int
    position: int  # from the prompt's first real token (0 = first token)
    token: str
    alpha: float


@dataclass
class SinkReport:
    """Sink measurements over a set of prompts.

    Attributes:
        first: column mean of each prompt's first real token per (prompt, layer, head).
        n_hidden: number of hidden sinks per (prompt, layer, head).
        hidden: every hidden sink found (prompt, layer, head, position, token, alpha).
        layers: the layers measured, in the order of the `layer` axis.
    """

    first: Float[Tensor, "prompt layer head"]
    n_hidden: Int[Tensor, "prompt layer head"]
    hidden: list[HiddenSink]
    layers: list[int]
    tau: float
    epsilons: tuple[float, ...]
    n_tokens: list[int] = field(default_factory=list)  # real tokens per prompt

    def sink_rate(self, eps: float = 0.3) -> float:
        """Gu et al.'s `Sink_1^eps`: share of (prompt, layer, head) whose first token has alpha > eps."""
        return (self.first > eps).float().mean().item()

    def sink_rate_by_layer(self, eps: float = 0.3) -> list[float]:
        return (self.first > eps).float().mean((0, 2)).tolist()

    def hidden_rate(self) -> float:
        """Share of (prompt, layer, head) with at least one hidden sink."""
        return (self.n_hidden > 0).float().mean().item()

    def token_table(self, top: int = 15, min_queries: int = 1) -> list[dict]:
        """The commonest hidden-sink tokens: hits (prompt, layer, head, position), prompts, heads, positions.

        `min_queries` keeps only keys seen by at least that many queries: a key near the end of a
        prompt is averaged over few rows (the last one over its own row), so its column mean passes
        `tau` easily; `min_queries=16` shows the sinks that hold over many rows.
        """
        hits, prompts, heads, positions = Counter(), defaultdict(set), defaultdict(set), defaultdict(list)
        for s in self.hidden:
            if self.n_tokens and self.n_tokens[s.prompt] - s.position < min_queries:
                continue
            hits[s.token] += 1
            prompts[s.token].add(s.prompt)
            heads[s.token].add((s.layer, s.head))
            positions[s.token].append(s.position)
        n_prompts = len(self.first)
        return [{"token": tok, "hits": n, "prompts": len(prompts[tok]),
                 "prompt_share": len(prompts[tok]) / n_prompts, "heads": len(heads[tok]),
                 "median_position": sorted(positions[tok])[len(positions[tok]) // 2]}
                for tok, n in hits.most_common(top)]

    def to_json(self, top: int = 30) -> dict:
        return {"layers": self.layers, "tau": self.tau, "prompts": len(self.first),
                "sink_rate": {str(e): self.sink_rate(e) for e in self.epsilons},
                "sink_rate_by_layer": {str(e): self.sink_rate_by_layer(e) for e in self.epsilons},
                "first_alpha_mean": self.first.mean(0).tolist(), "hidden_rate": self.hidden_rate(),
                "hidden_per_head": self.n_hidden.float().mean(0).tolist(), "tokens": self.token_table(top),
                "tokens_seen_by_16": self.token_table(top, min_queries=16)}

    def figure(self, eps: float = 0.3, top: int = 15):
        """Plotly: mean first-token alpha per layer x head, hidden sinks per prompt, commonest sink tokens."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        fig = make_subplots(rows=1, cols=3, subplot_titles=(
            "first-token column mean (mean over prompts)", f"hidden sinks per prompt (alpha > {self.tau})",
            "commonest hidden-sink tokens"))
        heads = list(range(self.first.shape[2]))
        fig.add_trace(go.Heatmap(z=self.first.mean(0).numpy(), x=heads, y=self.layers, colorscale="Viridis",
                                 zmin=0, zmax=1, colorbar=dict(x=0.29)), 1, 1)
        fig.add_trace(go.Heatmap(z=self.n_hidden.float().mean(0).numpy(), x=heads, y=self.layers,
                                 colorscale="Magma", colorbar=dict(x=0.64)), 1, 2)
        table = self.token_table(top)[::-1]
        fig.add_trace(go.Bar(x=[t["hits"] for t in table], y=[repr(t["token"]) for t in table],
                             orientation="h"), 1, 3)
        for col in (1, 2):
            fig.update_xaxes(title_text="head", row=1, col=col)
            fig.update_yaxes(title_text="layer", row=1, col=col)
        fig.update_xaxes(title_text="(prompt, layer, head, position) hits", row=1, col=3)
        fig.update_layout(title=f"Attention sinks: Sink1^{eps} = {100 * self.sink_rate(eps):.1f}%, "
                                f"{len(self.first)} prompts", height=520, width=1500, showlegend=False)
        return fig


@torch.no_grad()
def find_sinks(model, prompts: Sequence[str] | dict, config: SinkConfig | None = None, *,
               progress: bool = True) -> SinkReport:
    """Measure first-token and hidden sinks of `prompts` (each truncated to `config.length` tokens).

    `prompts` are strings, or an already tokenized left-padded batch (`input_ids`, `attention_mask`).
    """
    config = config or SinkConfig()
    model = as_model(model)
    tok = model.tokenizer
    if isinstance(prompts, dict):
        ids, mask = prompts["input_ids"], prompts.get("attention_mask", torch.ones_like(prompts["input_ids"]))
        batches = [(ids[i:i + config.batch_size], mask[i:i + config.batch_size])
                   for i in range(0, len(ids), config.batch_size)]
    else:
        if tok is None:
            raise InterpError("find_sinks got strings but the model has no tokenizer; pass a tokenized "
                              "batch.")
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        batches = [list(prompts[i:i + config.batch_size]) for i in range(0, len(prompts), config.batch_size)]
    if not batches:
        raise InterpError("find_sinks needs at least one prompt.")
    layers = ([model.adapter.check_layer(layer) for layer in config.layers] if config.layers
              else list(range(model.adapter.n_layers())))

    def measure(chunk) -> tuple:
        """One batch: first-token alphas, hidden-sink counts, hidden sinks (batch-local rows), lengths."""
        if isinstance(chunk, tuple):
            ids, mask = chunk
        else:
            enc = tok(chunk, return_tensors="pt", padding=True, truncation=config.length is not None,
                      max_length=config.length)
            ids, mask = enc["input_ids"], enc["attention_mask"]
        model.check_length(ids.shape[1])
        stats = Stats(layers=layers, max_memory=config.max_memory)  # column statistics are on by default
        with capture(model, probes=[stats]):
            model.hf(input_ids=ids.to(model.device), attention_mask=mask.to(model.device))
        columns = stats.columns  # {layer: ColumnStats}
        alpha = torch.stack([columns[layer].mean for layer in layers], 1).cpu()  # [batch, layer, head, key]
        mask, ids = mask.bool().cpu(), ids.cpu()
        first = mask.int().argmax(-1)  # left padding: the first real token
        rows = torch.arange(len(ids))
        later = mask.clone()
        later[rows, first] = False
        is_hidden = (alpha > config.tau) & later[:, None, None, :]
        hidden = []
        for p, li, h, k in torch.nonzero(is_hidden).tolist():
            token = tok.decode([int(ids[p, k])]) if tok is not None else str(int(ids[p, k]))
            hidden.append((p, layers[li], h, k - int(first[p]), token, float(alpha[p, li, h, k])))
        return alpha[rows, :, :, first], is_hidden.sum(-1), hidden, mask.sum(-1).tolist()

    # under torchrun the batches are dealt to the ranks and merged in order (`interp.parallel`)
    with progress_bar(enabled=progress and is_main(), transient=True) as display:
        task = display.add_task("sinks", total=len(batches))
        done = map_units(measure, batches, on_done=lambda i, result: display.advance(task))
    hidden, seen = [], 0
    for _, _, sinks, lengths in done:
        hidden += [HiddenSink(seen + p, *rest) for p, *rest in sinks]
        seen += len(lengths)
    return SinkReport(torch.cat([d[0] for d in done]), torch.cat([d[1] for d in done]), hidden, layers,
                      config.tau, tuple(config.epsilons), [n for d in done for n in d[3]])


def passages(n: int = 64, *, words: int = 80, path: str | Path | None = None, seed: int = 0) -> list[str]:
    """`n` natural-text passages of about `words` words from a public-domain text
    (Gutenberg header skipped)."""
    import random

    if path is None:
        candidates = sorted(DEFAULT_TEXT.glob("*.txt")) if DEFAULT_TEXT.is_dir() else []
        if not candidates:
            raise InterpError(f"no text files under {DEFAULT_TEXT}; pass path= to a plain-text file.")
        path = candidates[0]
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    start = text.find("*** START")
    body = text[text.find("\n", start) + 1:] if start >= 0 else text
    tokens = body.split()
    if len(tokens) < words * 2:
        raise InterpError(f"{path} is too short for {words}-word passages.")
    rng = random.Random(seed)
    offsets = sorted(rng.sample(range(0, len(tokens) - words), n))
    return [" ".join(tokens[o:o + words]) for o in offsets]


__all__ = ["SinkConfig", "SinkReport", "HiddenSink", "find_sinks", "passages"]
