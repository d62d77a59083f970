"""DuoAttention's head selection: per-KV-head gates trained by distillation on passkey text.

Each KV head gets a gate `alpha` in [0, 1]; its query heads output `alpha * full + (1 - alpha) *
streaming` attention (streaming: the first `sink` real tokens and a `window` of recent keys, by
mask). The model is frozen; the gates minimise the squared distance between the gated model's and
the full model's final hidden states (averaged over hidden units and the last `tail` positions:
the question and answer) of synthetic passkey prompts, plus `l1 * sum(alpha)`, with Adam (DuoAttention's
loss, regulariser weight 0.05 and learning rate 0.02). High gates are heads that need the whole
context. The passkeys are numbers, disjoint from the NIAH needles used for evaluation.

    >>> gates = train_gates(m, DuoConfig(steps=100, length=512, window=64))      # doctest: +SKIP
    >>> policy = select_kv_heads(m, gates, fraction=0.25, sink=4, window=256)  # doctest: +SKIP

Memory: one prompt's activations for backward (`length` tokens; 512 on SmolLM2 is ~1 GB).
"""

import random
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from interp.axes import HeadOutput
from interp.capture import AttentionCall, Probe, capture
from interp.intervene.compress.attention import streaming_visible
from interp.intervene.compress.policy import check_streaming
from interp.models.model import as_model
from interp.progress import bar as progress_bar
from interp.tasks.niah import DEFAULT_HAYSTACK, read_haystack


@dataclass
class DuoConfig:
    """Gate training: `steps` prompts of `length` tokens, streaming mask `sink` + `window`."""

    steps: int = 100
    length: int = 512
    sink: int = 4
    window: int = 64
    lr: float = 0.02
    l1: float = 0.05
    tail: int = 16
    seed: int = 0


class GatedAttention(Probe):
    """Mixes full and streaming attention per KV head with trainable gates `alpha` ([layer, kv_head])."""

    def __init__(self, alpha: Tensor, sink: int, window: int):
        self.alpha, self.sink, self.window = alpha, sink, window

    def begin(self, model) -> None:
        self.stack = model.adapter.main_stack

    def wants(self, stack: str, layer: int) -> bool:
        return stack == self.stack

    def attention_output(self, call: AttentionCall) -> HeadOutput:
        vis = call.visible()  # [batch, query, key]
        valid = vis[:, -1]  # the last query sees every real key
        pos = torch.arange(call.k_len, device=vis.device).expand(call.batch, -1)
        q_pos = torch.arange(call.k_len - call.q_len, call.k_len, device=vis.device)
        is_sink = valid & (torch.cumsum(valid.int(), 1) <= self.sink)
        stream = streaming_visible(vis, pos, is_sink, q_pos, self.window)
        sdpa = torch.nn.functional.scaled_dot_product_attention
        full = sdpa(call.query, call.key, call.value, attn_mask=vis[:, None], scale=call.scaling,
                    enable_gqa=True)
        part = sdpa(call.query, call.key, call.value, attn_mask=stream[:, None], scale=call.scaling,
                    enable_gqa=True)
        a = self.alpha[call.layer].repeat_interleave(call.n_heads // call.n_kv_heads).view(1, -1, 1, 1)
        z = a * full.nan_to_num(0.0) + (1 - a) * part.nan_to_num(0.0)
        return z.transpose(1, 2)


def passkey_prompts(tokenizer, n: int, length: int, seed: int = 0) -> list[list[int]]:
    """`n` prompts of about `length` tokens: filler text with a 5-digit pass key, then its question."""
    rng = random.Random(seed)
    filler = tokenizer(read_haystack(DEFAULT_HAYSTACK), add_special_tokens=False)["input_ids"]
    prompts = []
    for _ in range(n):
        key = rng.randint(10000, 99999)
        needle = tokenizer(f" The pass key is {key}. Remember it. {key} is the pass key.",
                           add_special_tokens=False)["input_ids"]
        question = tokenizer(f"\nWhat is the pass key? The pass key is {key}.",
                             add_special_tokens=False)["input_ids"]
        n_fill = max(1, length - len(needle) - len(question))
        start = rng.randrange(0, len(filler) - n_fill)
        text = filler[start:start + n_fill]
        cut = rng.randrange(0, n_fill)
        prompts.append(text[:cut] + needle + text[cut:] + question)
    return prompts


def train_gates(model, config: DuoConfig | None = None, *,
                progress: bool = True) -> Float[Tensor, "layer kv_head"]:
    """Train DuoAttention gates on passkey prompts (see the module docstring); returns `alpha`."""
    m = as_model(model)
    config = config or DuoConfig()
    check_streaming(config.sink, config.window)
    adapter = m.adapter
    alpha = torch.ones(adapter.n_layers(), adapter.n_kv_heads, requires_grad=True)
    opt = torch.optim.Adam([alpha], lr=config.lr)
    prompts = passkey_prompts(m.tokenizer, config.steps, config.length, config.seed)
    frozen = [(p, p.requires_grad) for p in m.hf.parameters()]
    display = progress_bar(enabled=progress, transient=True)
    task = display.add_task("duo gates", total=len(prompts))
    try:
        display.start()
        for p, _ in frozen:
            p.requires_grad_(False)
        for ids in prompts:
            ids = torch.tensor([ids], device=m.device)
            with torch.no_grad():
                want = m.hf(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states[-1]
            with capture(m, probes=[GatedAttention(alpha, config.sink, config.window)], grad=True):
                got = m.hf(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states[-1]
            # DuoAttention's balance: squared error averaged over hidden units and tail positions, plus
            # `l1` times the *sum* of the gates (so each gate feels `l1`, whatever the model's size)
            distill = (got[:, -config.tail:] - want[:, -config.tail:]).pow(2).mean()
            loss = distill + config.l1 * alpha.abs().sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                alpha.clamp_(0.0, 1.0)
            display.update(task, advance=1, description=f"duo gates: distill {distill.item():.3g}, "
                                                        f"mean alpha {alpha.mean().item():.2f}")
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
        display.stop()
    return alpha.detach().clone()

