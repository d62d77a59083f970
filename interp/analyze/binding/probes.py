"""Interventions that test a mechanistic account of binding: which line the queried key comes from.

A plain binding prompt names the queried key twice after the context: in the question line
("What does Ann love?") and in the restatement the answer continues ("Answer: Ann loves").
Two interventions tell which one the model reads:

- `key_conflict`: the question asks about key `i` but the restatement names key `j`; the share
  of answers bound to `i` (question), to `j` (restatement) or to neither;
- `key_knockout`: at one layer, the last token may not attend to the question's key token (or the
  restatement's, or the context's), all heads, weights renormalised over the remaining keys
  (`KeyKnockout`, a capture-engine editor); accuracy with and without it.

    >>> from interp.organisms.binding import load_organism                   # doctest: +SKIP
    >>> model, tok = load_organism()                                        # doctest: +SKIP
    >>> key_conflict(model, tok, BindingTask("foods", tok), n=8, count=200)  # doctest: +SKIP
    {'question': 0.93, 'restatement': 0.03, 'other': 0.04, 'count': 200}

Plain format only (the key positions are found in the token ids). Memory: one batch of prompts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

import torch
from jaxtyping import Int
from torch import Tensor

from interp.analyze.binding.generalise import generalisation
from interp.axes import Pattern
from interp.capture import AttentionCall, Probe, capture
from interp.errors import InterpError
from interp.models.model import as_model
from interp.organisms.binding import DEFAULT_DIR, load_organism
from interp.tasks.binding import TEMPLATES, BindingPrompt, BindingTask, tokenize_prompts

__all__ = ["SITES", "KeyKnockout", "key_conflict", "key_knockout", "key_positions"]

SITES = ("context", "question", "restatement")


def key_positions(tokenizer, prompts: list[BindingPrompt], input_ids: Int[Tensor, "batch pos"]
                  ) -> dict[str, Int[Tensor, " batch"]]:
    """Token index of the queried key in the context, the question line and the restatement.

    The restatement's key is its last occurrence, the question's the one before; the context's is
    the one in the context. Keys must be single tokens.
    """
    out = {site: [] for site in SITES}
    for row, p in zip(input_ids.tolist(), prompts):
        if p.format != "plain":
            raise InterpError("key positions are found in plain-format prompts only; use format='plain'.")
        ids = _ids(tokenizer, p.keys[p.query])
        rest = max(i for i, t in enumerate(row) if t in ids)
        ques = max(i for i, t in enumerate(row[:rest]) if t in ids)
        ctx = max(i for i, t in enumerate(row[:ques]) if t in ids)
        for site, pos in zip(SITES, (ctx, ques, rest)):
            out[site].append(pos)
    return {site: torch.tensor(v) for site, v in out.items()}


def _ids(tokenizer, key: str) -> set[int]:
    """The token ids a key may take (with / without a leading space, sentence case)."""
    forms = {key, " " + key, key[:1].upper() + key[1:], " " + key[:1].upper() + key[1:]}
    ids = {tuple(tokenizer(f, add_special_tokens=False).input_ids) for f in forms}
    return {i[0] for i in ids if len(i) == 1}


@dataclass
class KeyKnockout(Probe):
    """Hide key position `positions[b]` from the LAST query of every head at `layer` (renormalised).

        >>> ko = KeyKnockout(layer=0, positions=torch.tensor([7, 9]))            # doctest: +SKIP
        >>> with interp.capture(m, edits=[ko]):                                  # doctest: +SKIP
        ...     logits = m.hf(**batch).logits
    """

    layer: int = 0
    positions: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    stack: str | None = None

    def begin(self, model) -> None:
        self.stack = self.stack or model.adapter.main_stack
        self.layer = model.adapter.check_layer(self.layer, self.stack)

    def wants(self, stack: str, layer: int) -> bool:
        return stack == self.stack and layer == self.layer

    def edited_heads(self, call: AttentionCall) -> Tensor | None:
        return torch.arange(call.n_heads)

    def edit_weights(self, call: AttentionCall, weights: Pattern, heads: Tensor) -> Pattern:
        weights = weights.clone()
        rows = torch.arange(weights.shape[0])
        weights[rows, :, -1, self.positions.to(weights.device)] = 0
        weights[:, :, -1] /= weights[:, :, -1].sum(-1, keepdim=True).clamp_min(1e-30)
        return weights


def _conflicting(task: BindingTask, n: int, rng: random.Random) -> tuple[BindingPrompt, int, int]:
    """A prompt whose question asks about group i and whose restatement names group j != i."""
    p = task.sample(n, rng=rng)
    i, j = rng.sample(range(n), 2)
    ask = task.render(replace(p, query=i))
    say = task.render(replace(p, query=j))
    q_line = ask.text.rsplit("\n", 1)[0]
    text = q_line + "\n" + say.text.rsplit("\n", 1)[1]
    return replace(say, text=text), i, j


@torch.no_grad()
def key_conflict(model, tokenizer, task: BindingTask, *, n: int = 8, count: int = 200, seed: int = 0,
                 batch_size: int = 100) -> dict[str, float]:
    """Share of answers bound to the question's key, the restatement's key, or neither."""
    if task.format != "plain":
        raise InterpError("key_conflict builds plain-format prompts; use BindingTask(..., format='plain').")
    rng = random.Random(seed)
    hf = as_model(model).hf
    counts = {"question": 0, "restatement": 0, "other": 0}
    for start in range(0, count, batch_size):
        made = [_conflicting(task, n, rng) for _ in range(min(batch_size, count - start))]
        tp = tokenize_prompts(tokenizer, [m[0] for m in made])
        pred = hf(**tp.batch()).logits[:, -1].gather(1, tp.candidates).argmax(-1).tolist()
        for g, (_, i, j) in zip(pred, made):
            counts["question" if g == i else "restatement" if g == j else "other"] += 1
    return {k: v / count for k, v in counts.items()} | {"count": count}


@torch.no_grad()
def key_knockout(model, tokenizer, task: BindingTask, *, layer: int, n: int = 8, count: int = 200,
                 seed: int = 0, batch_size: int = 100) -> dict[str, float]:
    """Accuracy over the n candidates with no knockout and with each site's key hidden at `layer`."""
    rng = random.Random(seed)
    m = as_model(model, tokenizer)
    hits = {"none": 0} | {site: 0 for site in SITES}
    for start in range(0, count, batch_size):
        prompts = [task.sample(n, rng=rng) for _ in range(min(batch_size, count - start))]
        tp = tokenize_prompts(tokenizer, prompts)
        batch, target = tp.batch(), torch.tensor([p.query for p in prompts])
        pos = key_positions(tokenizer, prompts, tp.input_ids)
        for site in hits:
            edits = [] if site == "none" else [KeyKnockout(layer=layer, positions=pos[site])]
            with capture(m, edits=edits):
                logits = m.hf(**batch).logits[:, -1]
            hits[site] += int((logits.gather(1, tp.candidates).argmax(-1) == target).sum())
    return {site: v / count for site, v in hits.items()} | {"count": count}


def main(argv: list[str] | None = None) -> None:
    """`python -m interp.analyze.binding.probes --out FILE`: key probes + generalisation of the organism."""
    import argparse
    import json
    from pathlib import Path

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--model", type=Path, default=DEFAULT_DIR, help="a binding organism directory")
    parser.add_argument("--count", type=int, default=200, help="prompts per cell")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    model, tok = load_organism(args.model)
    doc: dict = {"command": f"python -m interp.analyze.binding.probes --count {args.count} --out {args.out}",
                 "n": 8, "count": args.count, "conflict": {}, "knockout": {}}
    for name in TEMPLATES:
        task = BindingTask(name, tok)
        doc["conflict"][name] = key_conflict(model, tok, task, n=8, count=args.count)
        doc["knockout"][name] = {layer: key_knockout(model, tok, task, layer=layer, n=8, count=args.count)
                                 for layer in (0, 1)}
    doc["generalisation"] = generalisation(model, tok, list(TEMPLATES), count=args.count)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    print(json.dumps({k: doc[k] for k in ("conflict", "knockout")}, indent=1))
    for r in doc["generalisation"]:
        print(f"{r['template']:8s} {r['variant']:20s} n={r['n']:2d} {r['accuracy']:.3f} "
              f"[{r['low']:.3f}, {r['high']:.3f}]")


if __name__ == "__main__":
    main()
