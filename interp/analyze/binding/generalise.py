"""How far a binding model's accuracy carries beyond its training prompts: more groups, paraphrases, formats.

Each variant rewrites the plain prompt of `interp.tasks.binding` and keeps its candidates:

| variant | prompt |
|---|---|
| `plain` | as trained: context, `Question: ...`, `Answer: <lead>` |
| `question paraphrase` | the question line reworded (`PARAPHRASES`) |
| `no question` | the question line removed: context, `Answer: <lead>` |
| `sentences` | the context as one sentence per group (`Ann loves pie. Tom loves jam.`) |

    >>> rows = generalisation(model, tok, ["foods"], groups=(8, 13), count=100)   # doctest: +SKIP
    >>> rows[0]                                                                    # doctest: +SKIP
    {'template': 'foods', 'variant': 'plain', 'n': 8, 'accuracy': 1.0, 'low': 0.96, 'high': 1.0, 'count': 100}

Memory: one batch of prompts at a time.
"""

from __future__ import annotations

import random
from dataclasses import replace

import torch

from interp.analyze.binding.sweep import share_interval
from interp.errors import InterpError
from interp.models.model import as_model
from interp.tasks.binding import BindingPrompt, BindingTask, tokenize_prompts

__all__ = ["PARAPHRASES", "VARIANTS", "generalisation", "variant_text"]

PARAPHRASES = {"boxes": "Where is the {key}?", "foods": "Which does {key} love?", "cities": "Where is {key}?",
               "colours": "What is the {key}?"}
VARIANTS = ("plain", "question paraphrase", "no question", "sentences")


def variant_text(task: BindingTask, p: BindingPrompt, variant: str) -> str:
    """The text of plain prompt `p` rewritten as `variant`."""
    if task.format != "plain":
        raise InterpError("variants rewrite plain-format prompts; use BindingTask(..., format='plain').")
    context, question, answer = p.text.split("\n")
    if variant == "plain":
        return p.text
    if variant == "question paraphrase":
        key = p.keys[p.query]
        return "\n".join([context, "Question: " + PARAPHRASES[task.template.name].format(key=key), answer])
    if variant == "no question":
        return context + "\n" + answer
    if variant == "sentences":
        t = task.template
        groups = [t.group.format(key=k, answer=a) for k, a in zip(p.keys, p.answers)]
        return " ".join(g[:1].upper() + g[1:] + "." for g in groups) + "\n" + question + "\n" + answer
    raise InterpError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}.")


@torch.no_grad()
def generalisation(model, tokenizer, templates: list[str], *, groups: tuple[int, ...] = (8, 12, 13, 16, 20),
                   variants: tuple[str, ...] = VARIANTS, variant_n: int = 8, count: int = 200, seed: int = 0,
                   batch_size: int = 100) -> list[dict]:
    """Accuracy (argmax over the n candidates, Wilson 95% interval) per template x n (plain) and x variant.

    `groups` are run on plain prompts, every other variant at `variant_n` groups.
    """
    hf = as_model(model).hf
    rows = []
    for name in templates:
        task = BindingTask(name, tokenizer)
        cells = [("plain", n) for n in groups] + [(v, variant_n) for v in variants if v != "plain"]
        for variant, n in cells:
            rng, hits = random.Random(seed * 1000 + n), 0
            for start in range(0, count, batch_size):
                prompts = [task.sample(n, rng=rng) for _ in range(min(batch_size, count - start))]
                prompts = [replace(p, text=variant_text(task, p, variant)) for p in prompts]
                tp = tokenize_prompts(tokenizer, prompts)
                pred = hf(**tp.batch()).logits[:, -1].gather(1, tp.candidates).argmax(-1)
                hits += int((pred == torch.tensor([p.query for p in prompts])).sum())
            low, high = share_interval(hits, count)
            rows.append({"template": name, "variant": variant, "n": n, "accuracy": hits / count, "low": low,
                         "high": high, "count": count})
    return rows
