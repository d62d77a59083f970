"""A user's own few-shot task from a JSON-lines file: read, split, and clear errors for malformed files."""

import json

import pytest

from interp.cli import main
from interp.tasks.fewshot import make_split
from interp.tasks.task_file import TaskFileError, read_task_file

pytestmark = pytest.mark.fast

HEADER = {"labels": ["negative", "positive"], "input_prefix": "Review: ", "answer_prefix": "Sentiment:"}


def write(path, *rows, raw: str = ""):
    path.write_text("\n".join(json.dumps(r) for r in rows) + raw + "\n")
    return path


def test_reads_labels_words_and_splits(tmp_path):
    rows = [{"text": f"good {i}", "label": "positive", "split": "train"} for i in range(6)]
    rows += [{"text": f"bad {i}", "label": 0, "split": "train"} for i in range(6)]
    rows += [{"text": f"test {i}", "label": i % 2, "split": "test"} for i in range(5)]
    task = read_task_file(write(tmp_path / "reviews.jsonl", HEADER, *rows))
    assert task.name == "reviews" and task.labels == ("negative", "positive")
    split = make_split(task, shots=2, dev=4, test=5, seed=0)
    assert sorted(d.label for d in split.demos) == [0, 1]  # balanced
    assert {e.text for e in split.test} == {f"test {i}" for i in range(5)}
    assert not {e.text for e in split.dev} & {e.text for e in split.demos}
    assert split.task.prompt(split.demos, split.test[0]).endswith("Review: " + split.test[0].text
                                                                  + "\nSentiment:")


def test_rows_without_a_split_are_halved_by_a_fixed_seed(tmp_path):
    rows = [{"text": f"t{i}", "label": i % 2} for i in range(10)]
    task = read_task_file(write(tmp_path / "t.jsonl", {"labels": ["no", "yes"]}, *rows))
    train, test = task.read(None)
    assert len(train) == len(test) == 5 and not {e.text for e in train} & {e.text for e in test}
    assert (train, test) == read_task_file(tmp_path / "t.jsonl").read(None)


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ('{"labels": "positive"}\n', "2 or more distinct label"),
    ('{"labels": ["a", "a"]}\n', "2 or more distinct label"),
    ('{"labels": ["a", "b"], "colour": 1}\n', "2 or more distinct label"),
    ('{"labels": ["a", "b"]}\n{"text": "x", "label": "c"}\n', "line 2: label 'c' is not one of a, b"),
    ('{"labels": ["a", "b"]}\n{"text": "x", "label": 2}\n', "line 2: label 2"),
    ('{"labels": ["a", "b"]}\n{"text": "x", "label": true}\n', "line 2: label True"),
    ('{"labels": ["a", "b"]}\n{"text": "", "label": 0}\n', "line 2: an example is"),
    ('{"labels": ["a", "b"]}\n{"text": "x", "label": 0, "split": "dev"}\n', "split 'dev'"),
    ('{"labels": ["a", "b"]}\n{"text": "x", "label": 0\n', "line 2: not JSON"),
    ('{"labels": ["a", "b"]}\n[1, 2]\n', "line 2: expected a JSON object"),
    ('{"labels": ["a", "b"]}\n{"text": "x", "label": 0, "split": "train"}\n', "needs training and test"),
])
def test_malformed_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(TaskFileError, match=message):
        read_task_file(path)


def test_binary_and_missing_files(tmp_path):
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(TaskFileError, match="not UTF-8"):
        read_task_file(tmp_path / "bin.jsonl")
    with pytest.raises(TaskFileError, match="not found"):
        read_task_file(tmp_path / "missing.jsonl")


def test_too_few_examples_of_a_label_for_balanced_shots(tmp_path):
    rows = [{"text": f"t{i}", "label": 1, "split": "train"} for i in range(4)] + [
        {"text": "q", "label": 0, "split": "test"}]
    task = read_task_file(write(tmp_path / "t.jsonl", {"labels": ["no", "yes"]}, *rows))
    with pytest.raises(Exception, match="too few training examples labelled 'no'"):
        make_split(task, shots=2, dev=0, test=1)


def test_cli_refuses_a_malformed_task_file_before_loading_the_model(tmp_path, capsys):
    (tmp_path / "bad.jsonl").write_text('{"labels": ["a"]}\n')
    assert main(["calibrate", "no-such-model", "--task-file", str(tmp_path / "bad.jsonl")]) == 2
    assert "2 or more distinct label" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # argparse: one of the two, not both
        main(["calibrate", "no-such-model", "--task", "sst2", "--task-file", "x.jsonl"])
    assert exit_.value.code == 2
