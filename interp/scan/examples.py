"""Drill-down examples for the report: a small attention pattern of each interesting head.

One short prompt (a sentence said twice, so induction and duplicate-token heads show their
stripes) runs once with patterns recorded for the chosen layers only (the scan records every
head: ~32 tokens, ~1 MB of JSON for SmolLM2's 270 heads at 4 decimals). Patterns longer than
`max_side` tokens are block-averaged down to `max_side x max_side`: the report never carries a
full N x N matrix of a long prompt.

Memory: `len(layers) x head x n x n` fp32 for the one prompt (n ~ 40 tokens by default: tiny).
"""

import torch
from jaxtyping import Float
from torch import Tensor

from interp.analyze.heads import DEFAULT_TEXT
from interp.axes import head_label
from interp.capture import capture

EXAMPLE_PROMPT = " ".join(DEFAULT_TEXT.split()[:14])


def downsample(pattern: Float[Tensor, "query key"], max_side: int) -> tuple[Tensor, list[int], list[int]]:
    """Block-average a pattern to at most `max_side` rows and columns; also return each bin's first index."""
    n_q, n_k = pattern.shape
    rows = _bins(n_q, max_side)
    cols = _bins(n_k, max_side)
    out = torch.stack([pattern[r0:r1].mean(0) for r0, r1 in zip(rows, rows[1:] + [n_q])])
    out = torch.stack([out[:, c0:c1].mean(1) for c0, c1 in zip(cols, cols[1:] + [n_k])], dim=1)
    return out, rows, cols


def _bins(n: int, max_side: int) -> list[int]:
    k = min(n, max_side)
    return [round(i * n / k) for i in range(k)]


def all_heads(doc: dict) -> list[tuple[int, int]]:
    """Every (layer, head) of the scanned model: the report's head cards show each one's pattern."""
    return [(layer, head) for layer in range(doc["model"]["n_layers"])
            for head in range(doc["model"]["n_heads"])]


def pick_heads(doc: dict, n: int = 12) -> list[tuple[int, int]]:
    """The top head of every head-level metric, round-robin over analyses, at most `n` distinct heads."""
    ranked = []
    for result in doc["analyses"].values():
        for metric in result["metrics"].values():
            if metric.get("columns"):
                continue  # not a per-head map
            flat = [(s, layer, head) for layer, row in enumerate(metric["scores"])
                    for head, s in enumerate(row)]
            ranked.append([(layer, head) for _, layer, head in sorted(flat, reverse=True)])
    picked: list[tuple[int, int]] = []
    depth = 0
    while len(picked) < n and ranked and depth < max(map(len, ranked)):
        for order in ranked:
            if depth < len(order) and order[depth] not in picked and len(picked) < n:
                picked.append(order[depth])
        depth += 1
    return sorted(picked)


@torch.no_grad()
def pattern_examples(model, heads: list[tuple[int, int]], *, prompt: str = EXAMPLE_PROMPT,
                     max_side: int = 48) -> dict:
    """`{"prompt", "tokens", "heads": {"L.H": {"pattern", "rows", "cols"}}}` for the scan document."""
    text = prompt + " " + prompt
    batch = model.encode([text])
    layers = sorted({layer for layer, _ in heads})
    if not layers:
        return {"prompt": text, "tokens": [], "heads": {}}
    with capture(model, patterns=layers) as rec:
        if model.backend == "tl":
            model.bridge(batch["input_ids"])
        else:
            model(**batch)
    ids = batch["input_ids"][0].tolist()
    tokens = [model.tokenizer.decode([i]) for i in ids]
    out = {}
    for layer, head in heads:
        small, rows, cols = downsample(rec.patterns[layer][0, head].float().cpu(), max_side)
        out[head_label(layer, head)] = {"pattern": [[round(x, 4) for x in r] for r in small.tolist()],
                                  "rows": rows, "cols": cols}
    return {"prompt": text, "tokens": tokens, "heads": out}
