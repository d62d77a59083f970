"""The binding model organism: shipped weights solve the task; the recipe is seeded and consistent."""

import random
import re

import pytest
import torch

from interp.organisms.binding import (
    DEFAULT_DIR,
    OrganismConfig,
    _example,
    build_tokenizer,
    load_organism,
    train,
)
from interp.tasks.binding import TEMPLATES, BindingTask, tokenize_prompts

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def organism():
    if not (DEFAULT_DIR / "model.safetensors").exists():
        pytest.fail(f"the organism's weights are missing from {DEFAULT_DIR}; run python -m interp.organisms.binding")
    return load_organism()


@pytest.mark.parametrize("template", list(TEMPLATES))
def test_shipped_organism_binds_held_out_prompts(organism, template):
    """The shipped organism is a PARTIAL one (the >= 95% goal is not reached; data/binding_organism/README.md).

    What it does reach, measured on this seed with 40 prompts per n (chance = 1/n): 0.55-1.00 at n = 5,
    0.60-0.88 at n = 7, 0.55-0.83 at n = 10. The floor asserted here is 2.5x chance, below every measured
    value, so the test fails if the weights stop binding (an organism at chance would score ~1/n).
    """
    model, tok = organism
    task = BindingTask(template, tok)
    rng = random.Random(123_456)  # a seed neither training nor the recipe's evaluation used
    for n in (5, 7, 10):
        prompts = [task.sample(n, rng=rng) for _ in range(40)]
        batch = tokenize_prompts(tok, prompts)
        with torch.no_grad():
            top = model(**batch.batch()).logits[:, -1].argmax(-1)  # over the WHOLE vocabulary
        answers = torch.tensor(tok.convert_tokens_to_ids([p.target for p in prompts]))
        assert (top == answers).float().mean() >= 2.5 / n, f"{template}, n={n}"


def test_tokenizer_covers_every_template_word():
    tok = build_tokenizer()
    for name in TEMPLATES:
        task = BindingTask(name, tok)
        for n in (1, 10):
            text = task.sample(n, rng=random.Random(n)).text
            assert tok.unk_token_id not in tok(text).input_ids, text
            assert tok.convert_ids_to_tokens(tok(text).input_ids) == re.findall(r"\w+|[^\w\s]", text)


def test_training_examples_start_with_the_evaluation_prompt():
    tok = build_tokenizer()
    task = BindingTask("foods", tok)
    ids, labels = _example(task, tok, 6, 3, random.Random(5))
    prompt = task.sample(6, rng=random.Random(5))  # same rng state -> same first prompt
    first = tok(prompt.text).input_ids
    assert ids[: len(first)] == first
    assert labels[len(first) - 1] == tok.convert_tokens_to_ids(prompt.target)
    assert sum(lab != -100 for lab in labels) == 3


def test_training_is_seeded():
    cfg = OrganismConfig(d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, d_mlp=32, steps=2, batch_size=4,
                         max_groups=4, eval_groups=(3,), eval_per_position=1)
    a, _, log_a = train(cfg, progress=False)
    b, _, log_b = train(cfg, progress=False)
    assert log_a["loss"] == log_b["loss"]
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name
