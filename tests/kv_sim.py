"""An independent reference for KV-cache compression tests: eager fp64 attention where streaming
heads see only their sink tokens and a recent window (by mask), registered as "kvsim"."""

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from interp.intervene.compress import KVPolicy

SIM = {}  # the reference's policy and prompt padding, set by `simulate`


def sim_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Eager fp64 attention where streaming heads see only sink tokens and a recent window (by mask)."""
    policy, valid_prompt = SIM["policy"], SIM["valid"]
    b, h, n_q, _ = query.shape
    n_k, group = key.shape[2], h // key.shape[1]
    valid = torch.ones(b, n_k, dtype=torch.bool)
    valid[:, : valid_prompt.shape[1]] = valid_prompt
    q_pos, k_pos = torch.arange(n_k - n_q, n_k)[:, None], torch.arange(n_k)[None, :]
    base = (k_pos <= q_pos)[None] & valid[:, None, :]
    is_sink = valid & (torch.cumsum(valid.int(), 1) <= policy.sink)
    stream = base & (is_sink[:, None, :] | (q_pos - k_pos < policy.window)[None])
    full = policy.full[module.layer_idx]
    out = torch.zeros(b, n_q, h, value.shape[-1], dtype=torch.float64)
    for head in range(h):
        kv = head // group
        s = query[:, head].double() @ key[:, kv].double().transpose(-1, -2) * scaling
        s = s.masked_fill(~(base if full[kv] else stream), float("-inf"))
        w = torch.softmax(s, -1).nan_to_num(0.0)
        out[:, :, head] = w @ value[:, kv].double()
    return out.to(query.dtype), None


AttentionInterface.register("kvsim", sim_attention)
AttentionMaskInterface.register("kvsim", sdpa_mask)


def generate(model, batch, n=6, **kw):
    return model.generate(**batch, max_new_tokens=n, do_sample=False, return_dict_in_generate=True,
                          output_logits=True, pad_token_id=0, **kw)


def simulate(model, batch, policy, n=6):
    SIM.update(policy=policy, valid=batch["attention_mask"].bool())
    model.set_attn_implementation("kvsim")
    try:
        return generate(model, batch, n)
    finally:
        model.set_attn_implementation("sdpa")


def policy(full, sink=2, window=4):
    return KVPolicy(torch.tensor(full), sink=sink, window=window, head_dim=8, bytes_per_value=4)


MIXED = [[True, False], [False, False]]
