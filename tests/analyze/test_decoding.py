"""Prefix-reusing, batched greedy decoding == `generate` one prompt at a time; scores == the padded path."""

import pytest
import torch
from tiny import tiny_model

from interp.analyze.decoding import PrefixCache, common_prefix, greedy, supports_prefix_decoding
from interp.analyze.trials import _run_padded, prefix_order, run_trials
from interp.intervene.ablate import HeadAblation
from interp.models.model import as_model
from interp.tasks.niah import Needle, Trial

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def tiny():
    from tiny import DigitsTokenizer

    hf = tiny_model("llama", seed=3)
    hf.generation_config.eos_token_id = None
    with torch.no_grad():  # only ids 3..11 can be generated, so heads copy prompt tokens
        keep = torch.zeros(hf.lm_head.weight.shape[0], dtype=torch.bool)
        keep[3:12] = True
        hf.lm_head.weight[~keep] = 0.0
        hf.lm_head.weight[keep] *= 10.0
    return as_model(hf, tokenizer=DigitsTokenizer())


def shared_haystack_trials(one_haystack: bool = False):
    """Two needles x three depths, each needle in its own haystack (trials of a needle share the text
    before it) or both in one (trials at one depth share it too: one right-padded prompt pass)."""
    g = torch.Generator().manual_seed(0)
    hays = [torch.randint(3, 12, (60,), generator=g).tolist() for _ in range(2)]
    trials = []
    for n in range(2):
        hay = hays[0] if one_haystack else hays[n]
        # what the tiny model generates: copies happen
        needle_ids = [8, 10, 5, 11] if n == 0 else [10, 5, 11, 8, 9, 4]
        needle = Needle(f"needle {n} code 7", "?", "7", "")
        for d, cut in enumerate((20, 30, 45)):
            ids = hay[:cut] + needle_ids + hay[cut:48] + [5, 6]
            span = (cut, cut + len(needle_ids))
            trials.append(Trial(f"n{n}-d{d}", needle, len(ids), d / 2, ids, span, span))
    return prefix_order(trials)


@pytest.mark.parametrize("one_haystack", [False, True])
def test_greedy_equals_generate_one_prompt_at_a_time(tiny, one_haystack):
    prompts = [t.input_ids for t in shared_haystack_trials(one_haystack)]
    prefix = PrefixCache(min_tokens=4)
    out = greedy(tiny, prompts, max_new_tokens=5, eos=set(), pad_id=0, prefix=prefix)
    for row, ids in enumerate(prompts):
        want = tiny.hf.generate(torch.tensor([ids]), max_new_tokens=5, do_sample=False, pad_token_id=0)
        assert out.sequences[row, out.prompt_len:].tolist() == want[0, len(ids):].tolist()
        assert out.sequences[row, out.pads[row]:out.prompt_len].tolist() == ids


def test_later_calls_decode_in_the_buffers_of_earlier_ones(tiny):
    prompts = [t.input_ids for t in shared_haystack_trials()]
    prefix = PrefixCache(min_tokens=4)
    first = greedy(tiny, prompts[:4], max_new_tokens=5, eos=set(), pad_id=0, prefix=prefix)
    keys = prefix.buffers[0][0]
    second = greedy(tiny, prompts[4:], max_new_tokens=5, eos=set(), pad_id=0, prefix=prefix)
    assert prefix.buffers[0][0] is keys  # two rows fit the four-row buffers: no new memory
    for out, batch in ((first, prompts[:4]), (second, prompts[4:])):
        for row, ids in enumerate(batch):
            want = tiny.hf.generate(torch.tensor([ids]), max_new_tokens=5, do_sample=False, pad_token_id=0)
            assert out.sequences[row, out.prompt_len:].tolist() == want[0, len(ids):].tolist()


@pytest.mark.parametrize("one_haystack", [False, True])
def test_prefix_cache_reuses_the_shared_haystack(tiny, monkeypatch, one_haystack):
    passes = []
    start = PrefixCache.start

    def spy(self, entries, n):
        passes.append((n, len(entries)))
        return start(self, entries, n)

    monkeypatch.setattr(PrefixCache, "start", spy)
    list(run_trials(tiny, shared_haystack_trials(one_haystack), batch_size=6, max_new_tokens=3,
                    progress=False, prefix=PrefixCache(min_tokens=4)))
    if one_haystack:  # deepest first; after the first trial, the two needles at one depth share a prompt pass
        assert passes == [(0, 1), (45, 1), (30, 2), (20, 2)]
    else:  # per needle: deepest first, each later trial starting from its whole haystack prefix
        assert passes == [(0, 1), (30, 1), (20, 1)] * 2
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2


@pytest.mark.parametrize("one_haystack", [False, True])
@pytest.mark.parametrize("phase", ["prefill", "decode", "both"])
def test_scores_and_ablations_equal_the_padded_generate_path(tiny, phase, one_haystack):
    trials = shared_haystack_trials(one_haystack)
    edits = [HeadAblation([(0, 1), (1, 2)], mode="zero", phase=phase)]
    fast = {r.id: r for b in run_trials(tiny, trials, batch_size=4, max_new_tokens=5, edits=edits, score=True,
                                        progress=False) for r in b}
    slow = {r.id: r for b in _run_padded(tiny, trials, 4, 5, edits, True, False) for r in b}
    assert fast.keys() == slow.keys()
    for i, want in slow.items():
        assert fast[i].output == want.output
        torch.testing.assert_close(fast[i].scores, want.scores, rtol=0, atol=1e-6)
    assert sum(r.scores.sum() for r in slow.values()) > 0  # heads did copy: not a comparison of zeros


def test_models_with_sliding_window_caches_take_the_general_path():
    assert supports_prefix_decoding(tiny_model("llama"))
    assert not supports_prefix_decoding(tiny_model("gemma2"))  # sliding-window cache layers


def test_reserved_cache_layer_writes_in_place_then_falls_back_to_concatenation():
    from interp.analyze.decoding import _ReservedLayer

    keys, values = torch.zeros(1, 2, 5, 4), torch.zeros(1, 2, 5, 4)
    layer = _ReservedLayer(keys, values, length=3)
    new = torch.ones(1, 2, 2, 4)
    k, _ = layer.update(new, new)  # fills the room: written into the buffer itself
    assert k.shape[-2] == 5 and k.data_ptr() == keys.data_ptr() and bool((keys[..., 3:, :] == 1).all())
    k, v = layer.update(2 * new[..., :1, :], 2 * new[..., :1, :])  # no room left: a concatenated copy
    assert k.shape[-2] == 6 and k.data_ptr() != keys.data_ptr()
    assert bool((k[..., 5, :] == 2).all()) and bool((v[..., 3:5, :] == 1).all())


def test_decode_argmax_supplies_the_same_decoding_output_as_sdpa(tiny):
    """The probe computes a single-query pass's output itself, from the weights it argmaxes."""
    from interp.analyze.trials import DecodeArgmax
    from interp.capture import capture

    ids = torch.randint(3, 12, (3, 24), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 25, dtype=torch.long)
    mask[0, :5] = 0  # a left-padded row
    with torch.no_grad():
        cache = tiny.hf(input_ids=ids, attention_mask=mask[:, :-1], use_cache=True).past_key_values
        step = {"input_ids": ids[:, -1:], "attention_mask": mask, "position_ids": torch.full((3, 1), 24)}
        plain = tiny.hf(**step, past_key_values=_copy(cache)).logits
        probe = DecodeArgmax()
        with capture(tiny, probes=[probe]):
            probed = tiny.hf(**step, past_key_values=_copy(cache)).logits
    torch.testing.assert_close(probed, plain, atol=1e-5, rtol=0)
    assert probe.take().shape == (tiny.adapter.n_layers(), 3, tiny.adapter.n_heads)


def _copy(cache):
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=[(k.clone(), v.clone()) for k, v, _ in cache])
