"""Needle-in-a-haystack prompts with token-exact needle and answer positions.

A *trial* hides one needle sentence ("The password to the old lighthouse is copper falcon.") at a
relative `depth` of a haystack of `length` context tokens, then asks its question. The haystack is
public-domain text shipped in `data/haystack/` (see its README). Placement is tokenizer-exact: the
needle goes in at a sentence boundary, the prompt is tokenized once with character offsets, and
the needle must start and end on token boundaries (else the next boundary is tried), so
`Trial.answer_span` is the exact `[start, stop)` token range of the answer in `Trial.input_ids`.
Locating the answer from character offsets (not by searching for the answer's own tokens) also
keeps the leading-space token that a standalone tokenization of the answer would miss.

For instruct models the assistant turn is pre-filled with the needle's restatement
("The password to the old lighthouse is"), so the first generated tokens are the answer itself.

    >>> trials = build_trials(m.tokenizer, NiahConfig(lengths=(300,), depths=(0.2, 0.8)))  # doctest: +SKIP
    >>> for group, batch in batches(trials, batch_size=8, pad_id=m.tokenizer.pad_token_id):  # doctest: +SKIP
    ...     out = m.hf.generate(**batch, max_new_tokens=8, do_sample=False)

Memory: a batch of `batch_size` prompts of `length` tokens; prefill costs grow with both.
"""

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from interp.errors import InterpError, PromptTooLongError
from interp.resources import data_path

HAYSTACK_DIR = data_path("haystack")
DEFAULT_HAYSTACK = HAYSTACK_DIR / "pride-and-prejudice.txt"
HELDOUT_TEXT = HAYSTACK_DIR / "heldout-frankenstein.txt"


class HaystackNotFoundError(InterpError, FileNotFoundError):
    """The haystack text file does not exist."""


class NeedleTooLongError(InterpError, ValueError):
    """A needle (plus question) that does not fit the requested context length."""


@dataclass(frozen=True)
class Needle:
    """A fact to hide, its question, its answer, and the restatement that opens the answer."""

    text: str
    question: str
    answer: str
    prefix: str

    def __post_init__(self):
        if self.answer not in self.text:
            raise InterpError(
                f"needle answer {self.answer!r} does not occur in the needle text {self.text!r}."
            )


NEEDLES: tuple[Needle, ...] = (
    Needle(
        "The password to the old lighthouse is copper falcon.",
        "What is the password to the old lighthouse?",
        "copper falcon",
        "The password to the old lighthouse is",
    ),
    Needle(
        "The secret ingredient in Aunt Mara's soup is smoked paprika.",
        "What is the secret ingredient in Aunt Mara's soup?",
        "smoked paprika",
        "The secret ingredient in Aunt Mara's soup is",
    ),
    Needle(
        "Doctor Ellery keeps her spare key inside a blue teapot.",
        "Where does Doctor Ellery keep her spare key?",
        "blue teapot",
        "Doctor Ellery keeps her spare key inside a",
    ),
    Needle(
        "The ship's cat on the Aurora is named Pickle.",
        "What is the name of the ship's cat on the Aurora?",
        "Pickle",
        "The ship's cat on the Aurora is named",
    ),
    Needle(
        "The magic word that opens the garden gate is marmalade.",
        "What is the magic word that opens the garden gate?",
        "marmalade",
        "The magic word that opens the garden gate is",
    ),
    Needle(
        "The treasure is buried beneath the crooked willow.",
        "Where is the treasure buried?",
        "crooked willow",
        "The treasure is buried beneath the",
    ),
    Needle(
        "Professor Quill's favourite instrument is the bassoon.",
        "What is Professor Quill's favourite instrument?",
        "bassoon",
        "Professor Quill's favourite instrument is the",
    ),
    Needle(
        "The winning lottery number last spring was 4817.",
        "What was the winning lottery number last spring?",
        "4817",
        "The winning lottery number last spring was",
    ),
)


@dataclass
class NiahConfig:
    """The grid of trials: every needle x context length x depth.

    `lengths` count context tokens (haystack + needle, without the template and question);
    `depths` are relative needle positions in [0, 1]. `chat` wraps the prompt in the tokenizer's
    chat template and pre-fills the answer's restatement. Every needle goes into the same haystack
    window (the start of the text, as in the paper's harness), so trials share all the text before
    their needle and a prompt pass can start from another trial's cache; `vary_window=True` gives
    each needle its own window instead (prompts then differ in more than the needle).
    """

    lengths: Sequence[int] = (300, 500, 800)
    depths: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9)
    needles: Sequence[Needle] = NEEDLES
    haystack: str | Path = DEFAULT_HAYSTACK
    chat: bool = True
    instruction: str = "Read the text below and answer the question after it."
    vary_window: bool = False


@dataclass
class Trial:
    """One prompt. Spans are `[start, stop)` token positions in `input_ids` (unpadded)."""

    id: str
    needle: Needle
    length: int
    depth: float
    input_ids: list[int] = field(repr=False)
    needle_span: tuple[int, int]
    answer_span: tuple[int, int]


def read_haystack(path: str | Path) -> str:
    """The haystack text, or a clear error naming the shipped alternatives."""
    path = Path(path)
    if not path.is_file():
        shipped = ", ".join(sorted(p.name for p in HAYSTACK_DIR.glob("*.txt"))) or "none"
        raise HaystackNotFoundError(
            f"haystack file {path} does not exist. Pass an existing UTF-8 text file; the project ships "
            f"{shipped} in {HAYSTACK_DIR}."
        )
    return path.read_text(encoding="utf-8")


@lru_cache(maxsize=4)
def _tokenized_haystack(tokenizer, path: str) -> tuple[str, tuple[tuple[int, int], ...]]:
    text = read_haystack(path)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return text, tuple(map(tuple, enc["offset_mapping"]))


def build_trials(tokenizer, config: NiahConfig | None = None, *, n_ctx: int | None = None) -> list[Trial]:
    """All trials of the grid, each with token-exact needle and answer spans.

    Raises `NeedleTooLongError` when a needle and question do not fit a length,
    `PromptTooLongError` when a prompt exceeds `n_ctx` (the model's window), and
    `HaystackNotFoundError` for a missing haystack file.
    """
    config = config or NiahConfig()
    if not getattr(tokenizer, "is_fast", False):
        raise InterpError("needle placement needs character offsets: pass a fast (Rust) tokenizer.")
    for depth in config.depths:
        if not 0.0 <= depth <= 1.0:
            raise InterpError(f"needle depth {depth} is outside [0, 1]; depths are fractions of the context.")
    if n_ctx is not None and max(config.lengths) > n_ctx:
        raise PromptTooLongError(
            f"context length {max(config.lengths)} exceeds the model's window of {n_ctx} tokens; "
            f"choose lengths "
            f"well below {n_ctx} (the template and question add tokens too)."
        )
    text, offsets = _tokenized_haystack(tokenizer, str(config.haystack))
    trials = []
    for n, needle in enumerate(config.needles):
        n_needle = len(tokenizer(" " + needle.text, add_special_tokens=False)["input_ids"])
        for length in config.lengths:
            if length <= 2 * n_needle:
                raise NeedleTooLongError(
                    f"needle {needle.text!r} has {n_needle} tokens; a context of {length} tokens leaves "
                    f"no haystack "
                    f"around it. Use lengths above {2 * n_needle} or a shorter needle."
                )
            for depth in config.depths:
                trial = _make_trial(tokenizer, config, text, offsets, needle, n, length, depth, n_needle)
                if n_ctx is not None and len(trial.input_ids) > n_ctx:
                    raise PromptTooLongError(
                        f"trial {trial.id} has {len(trial.input_ids)} tokens, over the model's window "
                        f"of {n_ctx}; "
                        f"use shorter context lengths."
                    )
                trials.append(trial)
    return trials


def _make_trial(tokenizer, config, text, offsets, needle, n, length, depth, n_needle) -> Trial:
    first = (n * 1500) % max(1, len(offsets) - length) if config.vary_window else 0
    hay_tokens = offsets[first : first + length - n_needle]
    if len(hay_tokens) < length - n_needle:
        raise NeedleTooLongError(f"the haystack has only {len(offsets)} tokens; use lengths below that.")
    hay = text[hay_tokens[0][0] : hay_tokens[-1][1]]
    boundaries = [m.end() for m in re.finditer(r"[.!?][”\"’]?(?=\s)", hay)] or [len(hay)]
    target = depth * len(hay)
    for cut in sorted(boundaries, key=lambda b: abs(b - target)):
        context = hay[:cut] + " " + needle.text + hay[cut:]
        trial = _tokenize(tokenizer, config, context, cut, needle, n, length, depth)
        if trial is not None:
            return trial
    raise InterpError(f"needle {needle.text!r} could not be placed on token boundaries in this haystack.")


def _tokenize(tokenizer, config, context, cut, needle, n, length, depth) -> Trial | None:
    user = f"{config.instruction}\n\n{context}\n\nQuestion: {needle.question}"
    if config.chat and getattr(tokenizer, "chat_template", None):
        head = tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
        )
        prompt, special = head + needle.prefix, False
    else:
        prompt, special = f"{user}\nAnswer: {needle.prefix}", True
    enc = tokenizer(prompt, add_special_tokens=special, return_offsets_mapping=True)
    starts = {s: i for i, (s, e) in enumerate(enc["offset_mapping"]) if e > s}
    ends = {e: i for i, (s, e) in enumerate(enc["offset_mapping"]) if e > s}
    needle_start = prompt.index(user) + len(config.instruction) + 2 + cut  # the space before the needle
    needle_stop = needle_start + 1 + len(needle.text)
    if needle_start not in starts or needle_stop not in ends:
        return None  # the needle would share a token with its neighbours: try another boundary
    answer_start = needle_start + 1 + needle.text.index(needle.answer)
    answer_stop = answer_start + len(needle.answer)
    covering = [i for i, (s, e) in enumerate(enc["offset_mapping"]) if e > answer_start and s < answer_stop]
    return Trial(
        id=f"n{n}-L{length}-d{depth:g}",
        needle=needle,
        length=length,
        depth=depth,
        input_ids=list(enc["input_ids"]),
        needle_span=(starts[needle_start], ends[needle_stop] + 1),
        answer_span=(covering[0], covering[-1] + 1),
    )


def batches(
    trials: Sequence[Trial], batch_size: int, pad_id: int, device: torch.device | str = "cpu"
) -> Iterator[tuple[list[Trial], dict[str, torch.Tensor]]]:
    """Left-padded batches `(trials, {"input_ids", "attention_mask", "answer_span"})`, by length.

    `answer_span` is `[batch, 2]` in padded coordinates (each row shifted by its padding).
    """
    if batch_size < 1:
        raise InterpError(f"batch_size must be >= 1, got {batch_size}.")
    order = sorted(trials, key=lambda t: len(t.input_ids))
    for i in range(0, len(order), batch_size):
        group = order[i : i + batch_size]
        width = max(len(t.input_ids) for t in group)
        ids = torch.full((len(group), width), pad_id, dtype=torch.long)
        mask = torch.zeros(len(group), width, dtype=torch.long)
        spans = torch.zeros(len(group), 2, dtype=torch.long)
        for row, t in enumerate(group):
            pad = width - len(t.input_ids)
            ids[row, pad:] = torch.tensor(t.input_ids)
            mask[row, pad:] = 1
            spans[row] = torch.tensor(t.answer_span) + pad
        yield (
            group,
            {"input_ids": ids.to(device), "attention_mask": mask.to(device), "answer_span": spans.to(device)},
        )


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def rouge1_recall(answer: str, output: str) -> float:
    """Fraction of the answer's words found in the output (ROUGE-1 recall, lower-cased, unique words).

    >>> rouge1_recall("copper falcon", " copper falcon.")
    1.0
    >>> rouge1_recall("crooked willow", "the willow tree")
    0.5
    """
    want, got = _words(answer), set(_words(output))
    if not want:
        return 0.0
    return sum(w in got for w in want) / len(want)


__all__ = [
    "DEFAULT_HAYSTACK",
    "HELDOUT_TEXT",
    "NEEDLES",
    "HaystackNotFoundError",
    "Needle",
    "NeedleTooLongError",
    "NiahConfig",
    "Trial",
    "batches",
    "build_trials",
    "read_haystack",
    "rouge1_recall",
]
