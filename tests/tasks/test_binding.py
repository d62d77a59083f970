"""Binding prompts: templates, the counterfactual construction, candidates and accuracy."""

import random
from types import SimpleNamespace

import pytest
import torch

from interp.errors import InterpError
from interp.organisms.binding import build_tokenizer
from interp.tasks.binding import TEMPLATES, BindingTask, accuracy, tokenize_prompts

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def word_tok():
    return build_tokenizer()


def test_at_least_four_templates_fill_ten_groups(word_tok):
    assert len(TEMPLATES) >= 4
    for name in TEMPLATES:
        task = BindingTask(name, word_tok)
        assert task.max_groups >= 10 and task.dropped == {"keys": [], "answers": []}


@pytest.mark.parametrize("n", [3, 4, 5, 10])
def test_counterfactual_mechanisms_point_to_three_distinct_answers(n):
    task = BindingTask("boxes")
    rng = random.Random(n)
    for _ in range(50):
        pair = task.counterfactual(n, rng=rng)
        o, c = pair.original, pair.counterfactual
        p, r, s = pair.positional, pair.lexical, pair.reflexive
        assert len({o.answers[p], o.answers[r], o.answers[s]}) == 3
        # re-derive the construction from the prompts themselves
        assert c.query == p  # the counterfactual asks about its group p ...
        assert c.keys[p] == o.keys[r]  # ... with the key the original binds in group r (lexical)
        assert c.target == o.answers[s]  # ... and its answer is the original's answer of group s (reflexive)
        assert [i for i in range(n) if c.keys[i] != o.keys[i]] == sorted({p, r})
        assert [i for i in range(n) if c.answers[i] != o.answers[i]] == sorted({p, s})
        assert pair.no_effect_distinct == (n >= 4)


def test_positional_group_can_be_fixed():
    task = BindingTask("foods")
    pairs = [task.counterfactual(5, rng=random.Random(i), positional=4) for i in range(10)]
    assert {p.positional for p in pairs} == {4}


def test_rendered_prompt_ends_with_answer_lead():
    task = BindingTask("cities")
    p = task.sample(4, rng=random.Random(0), query=2)
    assert p.text.endswith(f"Answer: {p.keys[2]} lives in")
    assert all(f"{k} lives in {a}" in p.text for k, a in zip(p.keys, p.answers))


def test_candidates_are_the_answer_token_ids(word_tok):
    task = BindingTask("colours", word_tok)
    prompts = [task.sample(n, rng=random.Random(n), query=0) for n in (5, 5)]
    tp = tokenize_prompts(word_tok, prompts)
    for row, p in zip(tp.candidates, prompts):
        assert row.tolist() == word_tok.convert_tokens_to_ids(list(p.answers))
    assert (tp.input_ids != word_tok.unk_token_id).all()


class _Oracle(torch.nn.Module):
    """Answers the boxes task by string search on the decoded prompt (an independent solver)."""

    def __init__(self, tok, last_group: bool = False):
        super().__init__()
        self.tok, self.last_group, self.dummy = tok, last_group, torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, **_):
        logits = torch.zeros(input_ids.shape[0], input_ids.shape[1], len(self.tok))
        for b, ids in enumerate(input_ids.tolist()):
            words = self.tok.convert_ids_to_tokens(ids)
            boxes = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "box" and words[i + 1] != "is"]
            key = words[-4]
            answer = boxes[-1] if self.last_group else words[words.index(key) + 4]
            logits[b, -1, self.tok.convert_tokens_to_ids(answer)] = 10.0
        return SimpleNamespace(logits=logits)


def test_accuracy_per_n_and_position(word_tok):
    task = BindingTask("boxes", word_tok)
    perfect = accuracy(_Oracle(word_tok), word_tok, task, [3, 6], per_position=3, progress=False)
    assert perfect.by_n == {3: 1.0, 6: 1.0} and perfect.top1_any == {3: 1.0, 6: 1.0}
    biased = accuracy(_Oracle(word_tok, last_group=True), word_tok, task, [4], per_position=3, progress=False)
    assert biased.by_position[4] == [0.0, 0.0, 0.0, 1.0] and biased.by_n[4] == 0.25
    assert "| 4 | 0.25 |" in biased.table()


def test_bad_input_is_explained(word_tok):
    with pytest.raises(InterpError, match="unknown binding template"):
        BindingTask("planets")
    with pytest.raises(InterpError, match="at most 20 groups"):
        BindingTask("boxes").sample(21, rng=random.Random(0))
    with pytest.raises(InterpError, match="n >= 3"):
        BindingTask("boxes").counterfactual(2, rng=random.Random(0))
    with pytest.raises(InterpError, match="chat template"):
        BindingTask("boxes", word_tok, format="chat")
    with pytest.raises(InterpError, match="unknown prompt format"):
        BindingTask("boxes", format="markdown")
    with pytest.raises(InterpError, match="same number of groups"):
        task = BindingTask("boxes", word_tok)
        tokenize_prompts(word_tok,
                         [task.sample(3, rng=random.Random(0)), task.sample(4, rng=random.Random(0))])
