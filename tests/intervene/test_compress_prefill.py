"""Chunked prefill: every chunking equals the one-shot pass and the fp64 masked simulation."""

import pytest
import torch
from kv_sim import MIXED, policy, simulate
from tiny import tiny_model

import interp
from interp.errors import InterpError
from interp.intervene.compress import cache_bytes, prefill

pytestmark = pytest.mark.fast


def _greedy_after(model, ids, n, **kw):
    logits, cache = prefill(model, ids, **kw)
    steps, tokens = [logits], [logits.argmax(-1)]
    for _ in range(n - 1):
        out = model(input_ids=tokens[-1][:, None], cache=cache, use_cache=True)
        cache = out.cache
        steps.append(out.logits[:, -1])
        tokens.append(out.logits[:, -1].argmax(-1))
    return torch.stack(tokens, 1), torch.stack(steps), cache


@pytest.mark.parametrize("chunk", [1, 3, 5, 16, 64])
def test_chunked_compressed_prefill_matches_masked_simulation(chunk):
    model = tiny_model("llama")
    ids = torch.randint(1, 90, (2, 23), generator=torch.Generator().manual_seed(1))
    kv = policy(MIXED, sink=2, window=4)  # chunks shorter and longer than the window
    with interp.compress(model, kv):
        tokens, logits, cache = _greedy_after(model, ids, 5, chunk=chunk)
    model.generation_config.eos_token_id = None  # the reference decodes every step, as the loop above
    want = simulate(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, kv, n=5)
    assert torch.equal(tokens, want.sequences[:, ids.shape[1]:])
    torch.testing.assert_close(logits, torch.stack(want.logits), atol=1e-4, rtol=0)
    assert all(layer.s_keys.shape[2] <= 2 + 4 for layer in cache.layers)
    assert cache_bytes(cache) == kv.kv_bytes(ids.shape[1] + 4, batch=2)


def test_prefill_from_a_shared_prefix_equals_the_whole_prompt():
    model = tiny_model("llama")
    ids = torch.randint(1, 90, (1, 30), generator=torch.Generator().manual_seed(2))
    with interp.compress(model, policy(MIXED, sink=2, window=4)):
        whole, _ = prefill(model, ids, chunk=7)
        _, shared = prefill(model, ids[:, :18], chunk=7)
        first, _ = prefill(model, ids[:, 18:], chunk=7, reuse=shared)
        again, _ = prefill(model, ids[:, 18:], chunk=7, reuse=shared)  # the shared cache is not consumed
    torch.testing.assert_close(first, whole, atol=1e-5, rtol=0)
    torch.testing.assert_close(again, whole, atol=1e-5, rtol=0)


def test_uncompressed_chunked_prefill_equals_one_pass():
    model = tiny_model("llama")
    ids = torch.randint(1, 90, (2, 19), generator=torch.Generator().manual_seed(3))
    logits, cache = prefill(model, ids, chunk=4)
    with torch.no_grad():
        want = model(input_ids=ids).logits[:, -1]
    torch.testing.assert_close(logits, want, atol=1e-5, rtol=0)
    assert cache.get_seq_length() == 19
    assert cache_bytes(cache) == 2 * 2 * 2 * 2 * 19 * 8 * 4  # layers, (k, v), batch, kv heads, n, d, fp32
    with pytest.raises(InterpError, match="chunk"):
        prefill(model, ids, chunk=0)
