"""Your own few-shot classification task, from one JSON-lines file.

The first line names the label words (once); every other line is an example:

    {"labels": ["negative", "positive"], "input_prefix": "Review: ", "answer_prefix": "Sentiment:"}
    {"text": "a gorgeous, witty, seductive movie.", "label": "positive", "split": "train"}
    {"text": "the acting is stiff.", "label": 0, "split": "test"}

`label` is a label word or its index. `split` ("train" or "test") is optional: examples without one
form a single pool, split in half by a fixed seed (as AG News is). `input_prefix`, `answer_prefix`
and `instruction` are optional (defaults: "Input: ", "Label:", none).

    >>> task = read_task_file("my.jsonl")                                      # doctest: +SKIP
    >>> split = make_split(task, shots=4, dev=32, test=100)                    # doctest: +SKIP

On the command line: `interp calibrate smollm2 --task-file my.jsonl`.
"""

import json
import random
from pathlib import Path

from interp.errors import InterpError
from interp.tasks.fewshot import Example, Task

HEADER_KEYS = {"labels", "input_prefix", "answer_prefix", "instruction"}
SPLITS = ("train", "test")


class TaskFileError(InterpError):
    """A task file that cannot be read as documented in `interp.tasks.task_file`."""


def read_task_file(path: str | Path) -> Task:
    """The task a JSON-lines file describes (validated line by line; errors name the line)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TaskFileError(f"task file {path} not found; pass a JSON-lines file "
                            "(format: `interp calibrate --help`).")
    header, rows = _parse(path)
    labels = tuple(header["labels"])
    pools = {"train": [], "test": [], None: []}
    for line, row in rows:
        example = _example(path, line, row, labels)
        pools[row.get("split")].append(example)
    if pools[None]:
        order = list(range(len(pools[None])))
        random.Random(1234).shuffle(order)  # fixed: the halves never depend on the run's seed
        half = len(order) // 2
        pools["train"] += [pools[None][i] for i in order[:half]]
        pools["test"] += [pools[None][i] for i in order[half:]]
    if not pools["train"] or not pools["test"]:
        raise TaskFileError(f"{path}: needs training and test examples "
                            "(give 'split', or at least 2 rows without one).")
    train, test = pools["train"], pools["test"]
    prefixes = header.get("input_prefix", "Input: "), header.get("answer_prefix", "Label:")
    return Task(path.stem, labels, *prefixes, instruction=header.get("instruction", ""),
                read=lambda root: (train, test), source=path)


def _parse(path: Path) -> tuple[dict, list[tuple[int, dict]]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise TaskFileError(f"{path} is not UTF-8 text; a task file is JSON lines.") from None
    parsed = []
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise TaskFileError(f"{path} line {number}: not JSON ({err.msg}).") from None
        if not isinstance(value, dict):
            raise TaskFileError(f"{path} line {number}: expected a JSON object, got {type(value).__name__}.")
        parsed.append((number, value))
    if not parsed:
        raise TaskFileError(f"{path} is empty; its first line names the labels, "
                            'e.g. {"labels": ["no", "yes"]}.')
    (number, header), rows = parsed[0], parsed[1:]
    labels = header.get("labels")
    if (set(header) - HEADER_KEYS or not isinstance(labels, list) or len(labels) < 2
            or not all(isinstance(w, str) and w.strip() for w in labels) or len(set(labels)) != len(labels)):
        raise TaskFileError(f"{path} line {number}: the first line must name 2 or more distinct label "
                            'words, e.g. {"labels": ["negative", "positive"]} (optional keys: input_prefix, '
                            "answer_prefix, instruction).")
    return header, rows


def _example(path: Path, line: int, row: dict, labels: tuple[str, ...]) -> Example:
    text, label, split = row.get("text"), row.get("label"), row.get("split")
    if set(row) - {"text", "label", "split"} or not isinstance(text, str) or not text.strip():
        raise TaskFileError(f"{path} line {line}: an example is {{\"text\": ..., \"label\": ..., \"split\": "
                            f"\"train\"|\"test\" (optional)}}; got keys {sorted(row)}.")
    if split is not None and split not in SPLITS:
        raise TaskFileError(f"{path} line {line}: split {split!r} is not 'train' or 'test'.")
    if isinstance(label, str) and label in labels:
        return Example(text, labels.index(label))
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(labels):
        return Example(text, label)
    raise TaskFileError(f"{path} line {line}: label {label!r} is not one of {', '.join(labels)} "
                        f"(or an index 0..{len(labels) - 1}).")


__all__ = ["TaskFileError", "read_task_file"]
