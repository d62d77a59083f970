"""Few-shot text classification by label-word log-probabilities (SST-2, AG News, TREC).

A prompt is an instruction, `shots` demonstrations and the test input, in the formats of the
in-context-learning calibration literature (Zhao et al. 2021, also ACT's classification set-up):

    Review: a gorgeous , witty , seductive movie .
    Sentiment: positive

    Review: the acting is stiff .
    Sentiment:

The model's prediction is the label whose word's first token gets the highest log-probability at
the next position (one forward pass per prompt; first tokens must differ, which is checked).
Data: SST-2, AG News and TREC ship in the package's `data/fewshot/` (provenance in `data/README.md`);
`data_dir=` points elsewhere. Your own task: a JSON-lines file read by `interp.tasks.task_file`.

    >>> split = make_split("sst2", shots=4, dev=64, test=200, seed=0)        # doctest: +SKIP
    >>> scores = evaluate(m, split.task, split.demos, split.test)            # doctest: +SKIP
    >>> scores.accuracy, scores.ci()                                         # doctest: +SKIP

Splits: demonstrations and the dev set come from the task's training pool (disjoint), the test set
from its test file, so head search never sees a test example. AG News ships only its test file
here: a seeded half of it serves as the training pool, the other half as the test pool.
"""

import csv
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.bootstrap import mean_ci
from interp.errors import InterpError
from interp.parallel import check_same, is_main, map_units
from interp.progress import bar
from interp.resources import data_path

DEFAULT_DATA = data_path("fewshot")


class UnknownTaskError(InterpError, KeyError):
    """A task name that is not in `TASKS`."""

    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True)
class Example:
    text: str
    label: int


@dataclass(frozen=True)
class Task:
    """A classification task: how to read it and how to write its prompts."""

    name: str
    labels: tuple[str, ...]  # label words, index = class id
    input_prefix: str  # e.g. "Review: "
    answer_prefix: str  # e.g. "Sentiment:"
    instruction: str = ""
    read: Callable[[Path], tuple[list[Example], list[Example]]] = field(
        default=None, repr=False, compare=False)
    # a task read from its own file (`interp.tasks.task_file`), not from `data_dir`
    source: Path | None = None

    def demo(self, ex: Example) -> str:
        return f"{self.input_prefix}{ex.text}\n{self.answer_prefix} {self.labels[ex.label]}\n\n"

    def prompt(self, demos: Sequence[Example], query: Example) -> str:
        head = f"{self.instruction}\n\n" if self.instruction else ""
        return (head + "".join(self.demo(d) for d in demos)
                + f"{self.input_prefix}{query.text}\n{self.answer_prefix}")


def _read_sst2(root: Path) -> tuple[list[Example], list[Example]]:
    def read(name):
        rows = (line.rstrip("\n").split(" ", 1) for line in (root / "sst2" / name).open(encoding="utf-8"))
        return [Example(text, int(label)) for label, text in rows]

    return read("stsa.binary.train"), read("stsa.binary.test")


def _read_agnews(root: Path) -> tuple[list[Example], list[Example]]:
    with (root / "agnews" / "test.csv").open(encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    examples = [Example(f"{title} {desc}".replace("\\", " ").strip(), int(cls) - 1)
                for cls, title, desc in rows]
    order = list(range(len(examples)))
    random.Random(1234).shuffle(order)  # fixed: the train/test halves never depend on the run's seed
    half = len(order) // 2
    return [examples[i] for i in order[:half]], [examples[i] for i in order[half:]]


def _read_trec(root: Path) -> tuple[list[Example], list[Example]]:
    coarse = {"NUM": 0, "LOC": 1, "HUM": 2, "DESC": 3, "ENTY": 4, "ABBR": 5}

    def read(name):
        out = []
        for line in (root / "trec" / name).open(encoding="latin-1"):
            tag, _, text = line.strip().partition(" ")
            out.append(Example(text, coarse[tag.split(":")[0]]))
        return out

    return read("train.txt"), read("test.txt")


TASKS: dict[str, Task] = {
    "sst2": Task("sst2", ("negative", "positive"), "Review: ", "Sentiment:", read=_read_sst2),
    "agnews": Task("agnews", ("World", "Sports", "Business", "Technology"), "Article: ", "Answer:",
                   instruction="Classify the news articles into the categories of World, Sports, Business, "
                               "and Technology.", read=_read_agnews),
    "trec": Task("trec", ("Number", "Location", "Person", "Description", "Entity", "Abbreviation"),
                 "Question: ", "Answer Type:",
                 instruction="Classify the questions based on whether their answer type is a Number, "
                             "Location, Person, Description, Entity, or Abbreviation.", read=_read_trec),
}


@lru_cache(maxsize=8)
def _read(task: Task, root: Path) -> tuple[list[Example], list[Example]]:
    return task.read(root)


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise UnknownTaskError(f"unknown few-shot task {name!r}; choose one of {', '.join(TASKS)}.")
    return TASKS[name]


@dataclass
class Split:
    task: Task
    demos: list[Example]
    dev: list[Example]
    test: list[Example]
    seed: int


def make_split(task: str | Task, *, shots: int, dev: int, test: int, seed: int = 0,
               data_dir: str | Path | None = None) -> Split:
    """Balanced demonstrations and a dev set from the training pool, a test set from the test pool, all
    disjoint."""
    task = get_task(task) if isinstance(task, str) else task
    if shots < 0 or dev < 0 or test < 1:
        raise InterpError(f"need shots >= 0, dev >= 0 and test >= 1; got shots={shots}, dev={dev}, "
                          f"test={test}.")
    root = task.source or (Path(data_dir) if data_dir is not None else DEFAULT_DATA)
    if task.source is None and not (root / task.name).is_dir():
        raise InterpError(f"few-shot data for {task.name!r} not found under {root}; pass data_dir= (or "
                          f"--data) pointing at a folder with {task.name}/ in it (see data/README.md).")
    train, pool = _read(task, root)
    rng = random.Random(seed)
    order = list(range(len(train)))
    rng.shuffle(order)
    demos, used = [], set()
    for cls in (c for _ in range(shots) for c in range(len(task.labels))):  # round-robin over classes
        if len(demos) == shots:
            break
        i = next((i for i in order if i not in used and train[i].label == cls), None)
        if i is None:
            raise InterpError(f"{task.name} has too few training examples labelled {task.labels[cls]!r} for "
                              f"{shots} balanced shots; lower --shots.")
        used.add(i)
        demos.append(train[i])
    rng.shuffle(demos)
    dev_set = [train[i] for i in order if i not in used][:dev]
    test_order = list(range(len(pool)))
    rng.shuffle(test_order)
    if test > len(pool) or dev > len(train) - shots:
        raise InterpError(f"{task.name} has {len(train)} training and {len(pool)} test examples; asked for "
                          f"{shots} shots + {dev} dev and {test} test.")
    return Split(task, demos, dev_set, [pool[i] for i in test_order[:test]], seed)


def label_token_ids(tokenizer, task: Task) -> list[int]:
    """The first token of each label word as it follows the answer prefix (`" positive"`); distinct or an
    error."""
    ids = [tokenizer(" " + word, add_special_tokens=False)["input_ids"][0] for word in task.labels]
    if len(set(ids)) != len(ids):
        raise InterpError(f"the label words of {task.name} share a first token under this tokenizer ({ids}); "
                          "choose label words that start differently.")
    return ids


@torch.no_grad()
def label_logprobs(model, prompts: Sequence[str], label_ids: Sequence[int], *, batch_size: int = 8,
                   progress: bool = False, description: str = "scoring") -> Float[Tensor, "prompt label"]:
    """Next-token log-probabilities of the label tokens after each prompt (batched, left-padded).

    Memory: one forward of `batch_size` prompts; lower it for long prompts.
    Under torchrun (`interp.parallel.init()` first) the batches are dealt to the ranks and merged in
    order: every rank returns what one process returns (idle ranks wait when batches are fewer).
    """
    ids = torch.tensor(list(label_ids))
    batches = [list(prompts[i:i + batch_size]) for i in range(0, len(prompts), batch_size)]
    check_same({"prompts": batches, "labels": ids.tolist(), "model": getattr(model, "name", "")},
               "prompts or label words")

    def unit(chunk: list[str]) -> Float[Tensor, "batch label"]:
        batch = model.encode(chunk)
        logits = model.hf(**batch).logits[:, -1].float()
        return torch.log_softmax(logits, -1)[:, ids.to(logits.device)].cpu()

    with bar(enabled=progress and is_main(), transient=True) as display:
        job = display.add_task(description, total=len(batches))
        out = map_units(unit, batches, on_done=lambda i, r: display.advance(job))
    return torch.cat(out)


@dataclass
class Scores:
    """Per-example label log-probs and gold labels, with accuracy and bootstrap intervals."""

    logprobs: Float[Tensor, "example label"]
    gold: Tensor

    @property
    def correct(self) -> Bool[Tensor, " example"]:
        return self.logprobs.argmax(-1) == self.gold

    @property
    def accuracy(self) -> float:
        return self.correct.float().mean().item()

    @property
    def gold_logprob(self) -> float:
        """Mean log-probability of the gold label renormalised over the labels (a smooth tie-breaker)."""
        norm = torch.log_softmax(self.logprobs, -1)
        return norm.gather(1, self.gold[:, None]).mean().item()

    def ci(self, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
        return bootstrap_ci(self.correct.float(), n_boot=n_boot, level=level, seed=seed)


def bootstrap_ci(values: Float[Tensor, " example"], *, n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean accuracy (`interp.bootstrap.mean_ci`)."""
    return mean_ci(values.float(), n_boot=n_boot, level=level, seed=seed)


def evaluate(model, task: Task, demos: Sequence[Example], examples: Sequence[Example], *, batch_size: int = 8,
             progress: bool = False, description: str = "scoring") -> Scores:
    """Score `examples` with `demos` as context; calibrate by calling this inside `calibrate(...)`."""
    prompts = [task.prompt(demos, ex) for ex in examples]
    lp = label_logprobs(model, prompts, label_token_ids(model.tokenizer, task), batch_size=batch_size,
                        progress=progress, description=description)
    return Scores(lp, torch.tensor([ex.label for ex in examples]))


__all__ = ["TASKS", "Task", "Example", "Split", "Scores", "get_task", "make_split", "label_token_ids",
           "label_logprobs", "evaluate", "bootstrap_ci", "UnknownTaskError"]
