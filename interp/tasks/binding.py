"""Entity-binding prompts: n groups of bound entities, one queried, plus counterfactuals.

A binding prompt lists `n` groups that each bind a *key* to an *answer* ("the apple is in box A")
and then asks for the answer bound to one key. `Template`s live in the `TEMPLATES` registry
(boxes, foods, cities, colours, ...); `Format`s render a prompt as plain text or through the
tokenizer's chat template with the answer's lead-in pre-filled in the assistant turn, so the next
token is the answer for base and instruct models alike.

The counterfactual construction (Gur-Arieh, Geva & Geiger 2025) separates three retrieval
mechanisms. From an original prompt (keys `k`, answers `a`, queried group `q`), pick three
DISTINCT groups `p` (positional), `r` (lexical) and `s` (reflexive); the counterfactual swaps the
answers of groups `p` and `s` and the keys of groups `p` and `r`, and queries its group `p`. After
patching the counterfactual's last-token residual into the original run, a model that retrieves

- by position answers `a[p]` (the original answer at the queried position),
- by the queried key answers `a[r]` (the original answer bound to the key it was asked about),
- by a pointer to the answer token answers `a[s]` (the counterfactual's correct answer itself),

and `a[q]` means the patch had no effect. The official sampler draws `r = s` when `n = 3`, which
merges lexical and reflexive; here the three are always distinct (so `n >= 3`), and `q` is distinct
from them too whenever `n >= 4` (with `n = 3`, "no effect" shares a label with one mechanism and
`Counterfactual.no_effect_distinct` is False).

Every candidate answer must be a single token for the model's tokenizer, so one logit scores it:
`BindingTask` drops entities that are not (listing them) and raises if too few remain. With
`multi_token="first"` multi-token answers are kept and scored by their first token, which must then
differ between candidates.

Example:
    >>> task = BindingTask("boxes")
    >>> import random
    >>> p = task.sample(3, rng=random.Random(0))
    >>> print(p.text)  # doctest: +ELLIPSIS
    The ... is in box ..., the ... is in box ..., the ... is in box ....
    Question: Which box is the ... in?
    Answer: The ... is in box
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from jaxtyping import Int
from torch import Tensor

from interp.errors import InterpError
from interp.parallel import map_units
from interp.progress import bar
from interp.tasks.binding_templates import FORMATS, TEMPLATES, Format, Template, vocabulary
from interp.tasks.binding_templates import sentence as _sentence

__all__ = [
    "FORMATS",
    "TEMPLATES",
    "AccuracyReport",
    "BindingPrompt",
    "BindingTask",
    "Counterfactual",
    "Template",
    "TokenizedPrompts",
    "accuracy",
    "tokenize_prompts",
    "vocabulary",
]



@dataclass(frozen=True)
class BindingPrompt:
    """A rendered prompt: groups `i = 0..n-1` bind `keys[i]` to `answers[i]`; `query` is asked."""

    template: str
    keys: tuple[str, ...]
    answers: tuple[str, ...]
    query: int
    format: Format = "plain"
    text: str = field(default="", compare=False)

    @property
    def n(self) -> int:
        return len(self.keys)

    @property
    def target(self) -> str:
        return self.answers[self.query]


@dataclass(frozen=True)
class Counterfactual:
    """An original prompt, its counterfactual, and the group each mechanism points to.

    The labels index groups of the ORIGINAL prompt: after patching, positional predicts
    `original.answers[positional]`, lexical `original.answers[lexical]`, reflexive
    `original.answers[reflexive]`, and "no effect" `original.answers[original.query]`.
    """

    original: BindingPrompt
    counterfactual: BindingPrompt
    positional: int
    lexical: int
    reflexive: int

    @property
    def no_effect_distinct(self) -> bool:
        return self.original.query not in (self.positional, self.lexical, self.reflexive)

    def label_groups(self) -> dict[str, int]:
        """Outcome label -> original group index (mechanism labels win a tie with "no effect")."""
        labels = {"no effect": self.original.query}
        labels.update(positional=self.positional, lexical=self.lexical, reflexive=self.reflexive)
        return labels


class BindingTask:
    """Samples binding prompts and counterfactuals for one template, filtered for a tokenizer.

    >>> BindingTask("boxes").max_groups
    20
    >>> BindingTask("planets")
    Traceback (most recent call last):
    ...
    interp.errors.InterpError: unknown binding template 'planets': choose one of boxes, foods, cities,
    colours.
    """

    def __init__(self, template: str | Template, tokenizer=None, *, format: Format = "plain",
                 multi_token: Literal["drop", "first"] = "drop"):
        if isinstance(template, str):
            if template not in TEMPLATES:
                raise InterpError(f"unknown binding template {template!r}: choose one of "
                                  f"{', '.join(TEMPLATES)}.")
            template = TEMPLATES[template]
        if format not in FORMATS:
            raise InterpError(f"unknown prompt format {format!r}: choose one of {', '.join(FORMATS)}.")
        if multi_token not in ("drop", "first"):
            raise InterpError(f"multi_token must be 'drop' or 'first', not {multi_token!r}.")
        if format == "chat" and (tokenizer is None or not getattr(tokenizer, "chat_template", None)):
            raise InterpError("format='chat' needs a tokenizer with a chat template; use format='plain'.")
        self.tokenizer, self.format, self.multi_token = tokenizer, format, multi_token
        self.dropped: dict[str, list[str]] = {"keys": [], "answers": []}
        if tokenizer is not None:
            template = self._filter(template, tokenizer)
        self.template = template

    @property
    def max_groups(self) -> int:
        return self.template.max_groups

    # -- single-token check -------------------------------------------------------------------
    def _filter(self, t: Template, tok) -> Template:
        """Keep keys that are one token in context and answers that are one next token."""
        ctx = self.render(BindingPrompt(t.name, t.keys[:1], t.answers[:1], 0, self.format), t)
        base = tok(ctx.text, add_special_tokens=False).input_ids
        answers = []
        for a in t.answers:
            ids = tok(ctx.text + " " + a, add_special_tokens=False).input_ids
            single = ids[: len(base)] == base and len(ids) == len(base) + 1
            (answers if single or self.multi_token == "first" else self.dropped["answers"]).append(a)
        keys = []
        for k in t.keys:  # a key sits mid-sentence after a space (or starts a sentence)
            forms = [" " + k] + ([" " + _sentence(k)] if t.group.startswith("{key}") else [])
            single = all(len(tok(f, add_special_tokens=False).input_ids) == 1 for f in forms)
            (keys if single else self.dropped["keys"]).append(k)
        if self.multi_token == "first":
            firsts = {a: tok(ctx.text + " " + a, add_special_tokens=False).input_ids[len(base)]
                      for a in answers}
            seen: dict[int, str] = {}
            for a, i in firsts.items():
                if i in seen:
                    self.dropped["answers"].append(a)
                else:
                    seen[i] = a
            answers = list(seen.values())
        return replace(t, keys=tuple(keys), answers=tuple(answers))

    # -- rendering ------------------------------------------------------------------------------
    def render(self, p: BindingPrompt, template: Template | None = None) -> BindingPrompt:
        """Fill in `p.text` for this task's format."""
        t = template or self.template
        context = _sentence(", ".join(t.group.format(key=k, answer=a)
                                      for k, a in zip(p.keys, p.answers))) + "."
        key = p.keys[p.query]
        question = t.question.format(key=key)
        lead = _sentence(t.answer.format(key=key))
        if self.format == "plain":
            text = f"{context}\nQuestion: {question}\nAnswer: {lead}"
        else:
            chat = [{"role": "user", "content": f"{context}\n{question}"}]
            text = self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) + lead
        return replace(p, format=self.format, text=text)

    def sample(self, n: int, *, rng: random.Random, query: int | None = None) -> BindingPrompt:
        """A prompt with `n` groups of distinct keys and answers, querying group `query` (random if None)."""
        self._check_n(n, minimum=1)
        keys = tuple(rng.sample(self.template.keys, n))
        answers = tuple(rng.sample(self.template.answers, n))
        q = rng.randrange(n) if query is None else query
        if not 0 <= q < n:
            raise InterpError(f"query group {q} is out of range for n={n} groups: use 0..{n - 1}.")
        return self.render(BindingPrompt(self.template.name, keys, answers, q))

    def counterfactual(self, n: int, *, rng: random.Random, positional: int | None = None) -> Counterfactual:
        """An original/counterfactual pair whose three mechanisms predict three distinct answers.

        `positional` fixes the group the positional mechanism points to (for per-position shares).
        """
        self._check_n(n, minimum=3)
        groups = list(range(n))
        p = rng.randrange(n) if positional is None else positional
        if not 0 <= p < n:
            raise InterpError(f"positional group {p} is out of range for n={n} groups: use 0..{n - 1}.")
        r, s = rng.sample([g for g in groups if g != p], 2)
        rest = [g for g in groups if g not in (p, r, s)]
        q = rng.choice(rest) if rest else rng.choice([p, r, s])
        orig = self.sample(n, rng=rng, query=q)
        keys, answers = list(orig.keys), list(orig.answers)
        keys[p], keys[r] = keys[r], keys[p]
        answers[p], answers[s] = answers[s], answers[p]
        cf = self.render(BindingPrompt(orig.template, tuple(keys), tuple(answers), p))
        return Counterfactual(orig, cf, positional=p, lexical=r, reflexive=s)

    def _check_n(self, n: int, *, minimum: int) -> None:
        if not isinstance(n, int) or n < minimum:
            raise InterpError(f"n={n!r} groups: this needs an integer n >= {minimum}.")
        if n > self.max_groups:
            dropped = "".join(f"; dropped as multi-token: {v}" for v in self.dropped.values() if v)
            raise InterpError(
                f"template {self.template.name!r} can fill at most {self.max_groups} groups "
                f"({len(self.template.keys)} keys, {len(self.template.answers)} answers{dropped}), "
                f"not n={n}: lower n or pick another template.")


# -- tokenization ---------------------------------------------------------------------------------
@dataclass
class TokenizedPrompts:
    """Left-padded token ids and, per prompt, the token id of each group's answer (group order)."""

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    candidates: Int[Tensor, "batch group"]

    def batch(self) -> dict[str, Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}


def tokenize_prompts(tokenizer, prompts: list[BindingPrompt]) -> TokenizedPrompts:
    """Tokenize prompts (left-padded) and find each candidate answer's next-token id.

    The candidate id is the token that follows the prompt when `" " + answer` is appended, so
    leading-space variants and chat templates are handled by the tokenizer itself.
    """
    if not prompts:
        raise InterpError("no prompts to tokenize: pass at least one BindingPrompt.")
    rows, cands = [], []
    for p in prompts:
        ids = tokenizer(p.text, add_special_tokens=p.format == "plain").input_ids
        row = []
        for a in p.answers:
            full = tokenizer(p.text + " " + a, add_special_tokens=p.format == "plain").input_ids
            if full[: len(ids)] != ids or len(full) <= len(ids):
                raise InterpError(f"answer {a!r} does not tokenize as a continuation of the prompt; "
                                  "build prompts with BindingTask(template, tokenizer) to filter entities.")
            row.append(full[len(ids)])
        if len(set(row)) != len(row):
            raise InterpError(f"candidates {p.answers} share a first token; use multi_token='drop'.")
        rows.append(ids)
        cands.append(row)
    if len({len(c) for c in cands}) != 1:
        raise InterpError("prompts in one batch must have the same number of groups n; batch per n.")
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return TokenizedPrompts(input_ids, mask, torch.tensor(cands))


# -- accuracy ---------------------------------------------------------------------------------------
@dataclass
class AccuracyReport:
    """Plain accuracy (argmax over the n candidates) per n and per queried position."""

    template: str
    format: str
    by_n: dict[int, float]
    by_position: dict[int, list[float]]  # n -> accuracy of queried group 0..n-1
    counts: dict[int, int]
    top1_any: dict[int, float] = field(default_factory=dict)  # argmax over the WHOLE vocab is the answer

    def to_json(self) -> dict:
        return {"template": self.template, "format": self.format, "by_n": self.by_n,
                "by_position": self.by_position, "counts": self.counts, "top1_any": self.top1_any}

    def table(self) -> str:
        """Markdown table: one row per n, columns overall, vocab-top-1 and each queried position."""
        width = max(self.by_position)
        head = "| n | acc | vocab top-1 | " + " | ".join(f"q={i}" for i in range(width)) + " |"
        lines = [head, "|" + "---|" * (width + 3)]
        for n in sorted(self.by_n):
            pos = [f"{v:.2f}" for v in self.by_position[n]] + [""] * (width - n)
            lines.append(f"| {n} | {self.by_n[n]:.2f} | {self.top1_any.get(n, float('nan')):.2f} | "
                         + " | ".join(pos) + " |")
        return "\n".join(lines)


@torch.no_grad()
def accuracy(model, tokenizer, task: BindingTask, groups: list[int], *, per_position: int = 10,
             seed: int = 0, batch_size: int = 32, progress: bool = True) -> AccuracyReport:
    """Accuracy of `model` on `task` for each n in `groups`, `per_position` prompts per queried group.

    Memory: one forward of `batch_size` prompts at a time (logits of the last position only are kept).
    Under torchrun (`interp.parallel.init()` first) the batches are dealt to the ranks and merged in
    order; every rank returns the same report.

    >>> # report = accuracy(model, tokenizer, BindingTask("boxes", tokenizer), [3, 5])
    >>> # print(report.table())
    """
    rng = random.Random(seed)
    prompts = {n: [task.sample(n, rng=rng, query=q) for q in range(n) for _ in range(per_position)]
               for n in groups}
    units = [(n, i) for n in groups for i in range(0, len(prompts[n]), batch_size)]
    device = next(model.parameters()).device

    def unit(u: tuple[int, int]) -> tuple[list[int], list[bool]]:
        """One batch: the predicted candidate and whether the vocabulary's top token is the answer."""
        chunk = prompts[u[0]][u[1]: u[1] + batch_size]
        tp = tokenize_prompts(tokenizer, chunk)
        logits = model(**{k: v.to(device) for k, v in tp.batch().items()}).logits[:, -1].float().cpu()
        top = logits.argmax(-1)
        return (logits.gather(1, tp.candidates).argmax(-1).tolist(),
                [t == c[p.query].item() for p, t, c in zip(chunk, top.tolist(), tp.candidates)])

    with bar(enabled=progress) as display:
        job = display.add_task(f"accuracy {task.template.name}", total=len(units))
        done = map_units(unit, units, on_done=lambda i, r: display.advance(job))
    by_n, by_pos, counts, any_top = {}, {}, {}, {}
    for n in groups:
        pred = [g for (m, _), r in zip(units, done) if m == n for g in r[0]]
        top = [t for (m, _), r in zip(units, done) if m == n for t in r[1]]
        hits = [sum(g == p.query for g, p in zip(pred, prompts[n]) if p.query == q) for q in range(n)]
        by_pos[n] = [h / per_position for h in hits]
        by_n[n] = sum(hits) / len(prompts[n])
        any_top[n] = sum(top) / len(prompts[n])
        counts[n] = len(prompts[n])
    return AccuracyReport(task.template.name, task.format, by_n, by_pos, counts, any_top)
