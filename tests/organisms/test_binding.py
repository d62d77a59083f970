"""The binding model organism: shipped weights solve the task; the recipe is seeded and consistent."""

import random
import re

import pytest
import torch

from interp.organisms.binding import (
    DEFAULT_DIR,
    OrganismConfig,
    _batch,
    _example,
    build_model,
    build_tokenizer,
    load_organism,
    train,
)
from interp.tasks.binding import TEMPLATES, BindingTask, tokenize_prompts

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def organism():
    if not (DEFAULT_DIR / "model.safetensors").exists():
        pytest.fail(f"the organism's weights are missing from {DEFAULT_DIR}; run python -m "
                    "interp.organisms.binding")
    return load_organism()


@pytest.mark.parametrize("template", list(TEMPLATES))
def test_shipped_organism_binds_held_out_prompts(organism, template):
    """>= 95% held-out accuracy at every n = 5..10 (the issue's bar), argmax over the WHOLE vocabulary.

    40 fresh prompts per n from a seed neither training nor the recipe's evaluation used (measured:
    1.00 everywhere; data/binding_organism/README.md).
    """
    model, tok = organism
    task = BindingTask(template, tok)
    rng = random.Random(123_456)
    for n in range(5, 11):
        prompts = [task.sample(n, rng=rng) for _ in range(40)]
        batch = tokenize_prompts(tok, prompts)
        with torch.no_grad():
            top = model(**batch.batch()).logits[:, -1].argmax(-1)
        answers = torch.tensor(tok.convert_tokens_to_ids([p.target for p in prompts]))
        assert (top == answers).float().mean() >= 0.95, f"{template}, n={n}"


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


@pytest.mark.parametrize("pack", [True, False])
def test_every_turn_of_a_training_batch_is_an_independent_evaluation_prompt(pack):
    """At every answer position the batch's logits equal those of that turn's prompt run alone.

    Reference: the same examples drawn again from the same seed, each turn cut out as context + turn
    and run alone with default positions and a plain causal mask (what evaluation does); each must
    match one answer position of the batch, so packing leaks nothing between examples or turns.
    """
    tok = build_tokenizer()
    cfg = OrganismConfig(d_model=32, n_heads=4, n_kv_heads=2, d_mlp=64, batch_size=6, max_groups=5, pack=pack)
    tasks = [BindingTask(name, tok) for name in TEMPLATES]
    ids, mask, pos, labels = _batch(tasks, tok, cfg, random.Random(0), cfg.max_groups)
    if pack:
        assert ids.shape[0] < cfg.batch_size  # examples really share rows
    rng, prompts = random.Random(0), []
    for _ in range(cfg.batch_size):  # _batch's draws, in its order
        n = rng.randint(cfg.min_groups, cfg.max_groups)
        ex_ids, _, turns = _example(rng.choice(tasks), tok, n, n, rng, turns=True)
        prompts += [[t for t, s in zip(ex_ids, turns) if s in (0, j)] for j in range(1, n + 1)]
    torch.manual_seed(0)
    model = build_model(cfg, len(tok)).eval()
    with torch.no_grad():
        batch = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[labels != -100]
        alone = torch.stack([model(input_ids=torch.tensor([p])).logits[0, -1] for p in prompts])
    assert batch.shape == alone.shape
    distance = torch.cdist(alone, batch)  # each prompt matches exactly one answer position
    assert distance.min(1).values.max() < 1e-4
    assert len(set(distance.argmin(1).tolist())) == len(prompts)


def test_training_is_seeded():
    cfg = OrganismConfig(d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, d_mlp=32, steps=2, batch_size=4,
                         max_groups=4, eval_groups=(3,), eval_per_position=1)
    a, _, log_a = train(cfg, progress=False)
    b, _, log_b = train(cfg, progress=False)
    assert log_a["loss"] == log_b["loss"]
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name


def test_second_stage_starts_from_the_saved_weights(tmp_path):
    cfg = OrganismConfig(d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, d_mlp=32, steps=2, batch_size=4,
                         max_groups=4, eval_groups=(3,), eval_per_position=1)
    first, _, _ = train(cfg, tmp_path / "stage1", progress=False)
    cfg.steps, cfg.seed = 0, 1  # no step taken: the second stage's model is exactly the first's
    second, _, log = train(cfg, init=tmp_path / "stage1", progress=False)
    assert log["init"]["config"]["steps"] == 2 and log["init"]["path"] == str(tmp_path / "stage1")
    for (name, pa), pb in zip(first.named_parameters(), second.parameters()):
        assert torch.equal(pa, pb), name
