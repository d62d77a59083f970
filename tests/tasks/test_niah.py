"""Needle-in-a-haystack prompts: token-exact placement, spans, padding and clear errors."""

import pytest

from interp.errors import InterpError, PromptTooLongError
from interp.tasks.niah import (
    DEFAULT_HAYSTACK,
    HELDOUT_TEXT,
    NEEDLES,
    HaystackNotFoundError,
    Needle,
    NeedleTooLongError,
    NiahConfig,
    batches,
    build_trials,
    rouge1_recall,
)

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizer import small_tokenizer  # tests/tokenizer.py: offline, no model download

    return small_tokenizer()


@pytest.fixture(scope="module")
def trials(tokenizer):
    return build_trials(tokenizer, NiahConfig(lengths=(120, 250), depths=(0.0, 0.5, 1.0)), n_ctx=8192)


def test_shipped_data_has_provenance():
    readme = (DEFAULT_HAYSTACK.parent / "README.md").read_text()
    for f in (DEFAULT_HAYSTACK, HELDOUT_TEXT):
        assert f.name in readme and f.stat().st_size > 20_000
    assert sum(p.stat().st_size for p in DEFAULT_HAYSTACK.parent.iterdir()) < 300_000


def test_grid_and_token_exact_spans(tokenizer, trials):
    assert len(trials) == len(NEEDLES) * 2 * 3 and len({t.id for t in trials}) == len(trials)
    for t in trials:
        needle = tokenizer.decode(t.input_ids[slice(*t.needle_span)])
        assert needle == " " + t.needle.text  # whole tokens, nothing of the neighbours
        answer = tokenizer.decode(t.input_ids[slice(*t.answer_span)])
        assert answer.strip() == t.needle.answer
        assert t.needle_span[0] <= t.answer_span[0] < t.answer_span[1] <= t.needle_span[1]
        # the prompt ends with the pre-filled restatement of the answer
        assert tokenizer.decode(t.input_ids).endswith(t.needle.prefix)


def test_depth_and_length_move_the_needle(trials):
    by_id = {t.id: t for t in trials}
    shallow, deep = by_id["n0-L250-d0"], by_id["n0-L250-d1"]
    assert shallow.needle_span[0] < deep.needle_span[0]
    assert len(by_id["n0-L120-d0.5"].input_ids) < len(by_id["n0-L250-d0.5"].input_ids)
    # context tokens are close to the requested length (the template adds a fixed overhead)
    overhead = len(by_id["n0-L120-d0.5"].input_ids) - 120
    assert abs(len(by_id["n0-L250-d0.5"].input_ids) - 250 - overhead) <= 4


def test_needles_share_one_haystack_window_unless_asked_to_vary(tokenizer, trials):
    by_id = {t.id: t for t in trials}
    a, b = by_id["n0-L250-d0.5"], by_id["n1-L250-d0.5"]
    start = a.needle_span[0]
    assert a.input_ids[:start] == b.input_ids[:start]  # the same text before the needle: a reusable prefix
    varied = build_trials(tokenizer,
                          NiahConfig(lengths=(250,), depths=(0.5,), needles=NEEDLES[:2], vary_window=True))
    # template tokens
    head = len(tokenizer.apply_chat_template([{"role": "user", "content": ""}], tokenize=True))
    assert varied[0].input_ids[head:start] != varied[1].input_ids[head:start]


def test_left_padded_batches_shift_spans(trials):
    seen = 0
    for group, batch in batches(trials, batch_size=5, pad_id=0):
        width = batch["input_ids"].shape[1]
        for row, t in enumerate(group):
            pad = width - len(t.input_ids)
            assert batch["attention_mask"][row, :pad].sum() == 0 and batch["attention_mask"][row, pad:].all()
            assert batch["input_ids"][row, pad:].tolist() == t.input_ids
            span = batch["answer_span"][row].tolist()
            assert batch["input_ids"][row, span[0] : span[1]].tolist() == t.input_ids[slice(*t.answer_span)]
        seen += len(group)
    assert seen == len(trials)


def test_rouge1_recall():
    assert rouge1_recall("copper falcon", "The password is Copper falcon!") == 1.0
    assert rouge1_recall("crooked willow", "a willow") == 0.5
    assert rouge1_recall("4817", "2017.") == 0.0


def test_bad_input(tokenizer, tmp_path):
    long = Needle("word " * 80 + "is the answer zebra.", "What?", "zebra", "It is")
    with pytest.raises(NeedleTooLongError, match="context of 100 tokens"):
        build_trials(tokenizer, NiahConfig(lengths=(100,), needles=[long]))
    with pytest.raises(PromptTooLongError, match="window of 8192"):
        build_trials(tokenizer, NiahConfig(lengths=(9000,)), n_ctx=8192)
    with pytest.raises(HaystackNotFoundError, match="does not exist"):
        build_trials(tokenizer, NiahConfig(haystack=tmp_path / "missing.txt"))
    with pytest.raises(InterpError, match="does not occur"):
        Needle("The sky is green.", "What colour is the sky?", "blue", "The sky is")
    with pytest.raises(InterpError, match="depth"):
        build_trials(tokenizer, NiahConfig(depths=(1.5,)))
    with pytest.raises(InterpError, match="batch_size"):
        next(batches([], batch_size=0, pad_id=0))
