"""The documented account of where the binding organism gathers the queried key, as interventions that can
fail.

docs/binding.md ("Where the key comes from") states, for the shipped organism at n = 8:
- foods follows the QUESTION line's key when the restatement names another key;
- hiding the question's key token from the last token's layer-0 attention breaks foods, hiding the
  restatement's key does not;
- boxes follows the restatement's key more often than the question's.
"""

import random

import pytest
import torch

from interp.analyze.binding.generalise import VARIANTS, variant_text
from interp.analyze.binding.probes import KeyKnockout, key_conflict, key_knockout, key_positions
from interp.capture import capture
from interp.models.model import as_model
from interp.organisms.binding import OrganismConfig, build_model, build_tokenizer, load_organism
from interp.tasks.binding import BindingTask, tokenize_prompts


@pytest.fixture(scope="module")
def organism():
    return load_organism()


@pytest.mark.fast
def test_foods_reads_the_key_from_the_question_line(organism):
    model, tok = organism
    shares = key_conflict(model, tok, BindingTask("foods", tok), n=8, count=100)
    assert shares["question"] >= 0.85 and shares["restatement"] <= 0.10, shares


@pytest.mark.fast
def test_layer0_knockout_of_the_question_key_breaks_foods_and_of_the_restatement_key_does_not(organism):
    model, tok = organism
    acc = key_knockout(model, tok, BindingTask("foods", tok), layer=0, n=8, count=100)
    assert acc["none"] >= 0.97 and acc["restatement"] >= 0.95 and acc["context"] >= 0.95, acc
    assert acc["question"] <= 0.6, acc


@pytest.mark.fast
def test_boxes_follows_the_restatement_more_than_the_question(organism):
    model, tok = organism
    shares = key_conflict(model, tok, BindingTask("boxes", tok), n=8, count=100)
    assert shares["restatement"] > shares["question"] + 0.15, shares


@pytest.mark.fast
def test_key_positions_point_at_the_key_token():
    tok = build_tokenizer()
    task = BindingTask("boxes", tok)
    prompts = [task.sample(5, rng=random.Random(i)) for i in range(4)]
    tp = tokenize_prompts(tok, prompts)
    pos = key_positions(tok, prompts, tp.input_ids)
    for b, p in enumerate(prompts):
        words = tok.convert_ids_to_tokens(tp.input_ids[b].tolist())
        found = [words[int(pos[s][b])] for s in ("context", "question", "restatement")]
        assert found == [p.keys[p.query]] * 3
        assert pos["context"][b] < pos["question"][b] < pos["restatement"][b] == len(words) - 4  # "in box"


@pytest.mark.fast
def test_knockout_equals_a_mask_that_hides_the_key_from_the_last_query():
    torch.manual_seed(0)
    tok = build_tokenizer()
    config = OrganismConfig(d_model=32, n_layers=1, n_heads=4, n_kv_heads=2, d_mlp=64)
    model = build_model(config, len(tok)).eval()
    task = BindingTask("foods", tok)
    prompts = [task.sample(4, rng=random.Random(i)) for i in range(3)]
    tp = tokenize_prompts(tok, prompts)  # same n: one length here (word-level tokens)
    hide = torch.tensor([2, 5, 7])
    length = tp.input_ids.shape[1]
    mask = torch.ones(length, length, dtype=torch.bool).tril()[None].repeat(3, 1, 1)
    mask[torch.arange(3), -1, hide] = False  # the independent reference: a 4-d mask, one layer model
    ref = model(input_ids=tp.input_ids, attention_mask=mask[:, None]).logits[:, -1]
    with capture(as_model(model, tok), edits=[KeyKnockout(layer=0, positions=hide)]):
        out = model(input_ids=tp.input_ids).logits[:, -1]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    assert not torch.allclose(out, model(input_ids=tp.input_ids).logits[:, -1], atol=1e-3)


@pytest.mark.fast
def test_variants_rewrite_only_their_part():
    task = BindingTask("foods")
    p = task.sample(3, rng=random.Random(0))
    texts = {v: variant_text(task, p, v) for v in VARIANTS}
    assert texts["plain"] == p.text and texts["no question"].count("\n") == 1
    assert "Which does" in texts["question paraphrase"] and texts["sentences"].split("\n")[0].count(".") == 3
    assert all(t.endswith(p.text.rsplit("\n", 1)[1]) for t in texts.values())
