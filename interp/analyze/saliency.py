"""Input saliency per generated token (captum), beside the attention the model paid to the same inputs.

For each token a model generated (greedy), saliency says how much each *input* position mattered
to that token's score (log-probability by default): a prompt token for a decoder-only LM, an
encoder frame (two log-mel frames) for Whisper. Methods come from a registry:

| name                   | captum class            | batched over                                      |
|------------------------|-------------------------|---------------------------------------------------|
| `input_x_gradient`     | `InputXGradient`        | generated tokens (`internal_batch_size` rows)     |
| `integrated_gradients` | `IntegratedGradients`   | tokens x `n_steps` (captum's `internal_batch_size`)|
| `occlusion`            | `Occlusion`             | patches (`internal_batch_size` per forward); every |
|                        |                         | token's score comes from the same perturbed pass   |

Occlusion slides a window over the input and replaces it by `baseline` (default 0): one token
(`window=(1,)`) for text, a time-frequency patch of the log-mel spectrogram for speech
(`window=(mel_bins, frames)`, default 16 x 10), as Papi et al. 2025 perturb spectrogram patches.
Whisper's normalised log-mels lie in about [-1, 1]; its silence padding sits near -0.77.

Example:
    >>> m = interp.load("smollm2")                                                  # doctest: +SKIP
    >>> r = explain_text(m, "The capital of France is", max_new_tokens=3)           # doctest: +SKIP
    >>> r.saliency.shape, r.attention.shape    # [step, key], [layer, head, step, key]  # doctest: +SKIP
    >>> print(r.table()["all_heads"].pearson)  # mean [95% CI]                          # doctest: +SKIP

Memory: gradient methods hold `internal_batch_size` full forward+backward passes at once (x `n_steps`
for integrated gradients, split by captum); the attention kept is `layer x head x step x key`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.analyze.agreement import SaliencyReport
from interp.capture import Patterns, capture
from interp.errors import InterpError
from interp.models.model import as_model
from interp.progress import track
from interp.tasks.speech import SAMPLE_RATE, check_waveform, resample

SPEECH_HOP = 160  # samples per log-mel frame (Whisper)
FRAMES_PER_POSITION = 2  # log-mel frames per encoder position (conv2 stride)


@dataclass
class SaliencyConfig:
    """How saliency is computed. `window`/`stride` only matter for occlusion (None: method default)."""

    method: str = "input_x_gradient"
    score: str = "logprob"  # "logprob" | "logit" | "prob" of the generated token
    n_steps: int = 32  # integrated gradients: Riemann steps
    internal_batch_size: int | None = 8
    window: tuple[int, ...] | None = None
    stride: tuple[int, ...] | None = None
    baseline: float = 0.0
    show_progress: bool = False


# --------------------------------------------------------------------------- targets


@dataclass
class Target:
    """What captum attributes: `inputs [1, ...]` and a forward giving every generated token's score.

    `forward(x)` returns `[batch, step]`; `forward(x, rows)` returns `[batch]`, the score of step
    `rows[i]` for example `i` (so the generated tokens become rows of one batch).
    """

    inputs: Tensor
    forward: Callable[..., Tensor]
    n_steps: int
    kind: str  # "text" | "speech"
    reduce: Callable[[Tensor], Tensor] = field(repr=False, default=None)
    module: torch.nn.Module | None = field(repr=False, default=None)  # frozen while attributing


def _scores(logits: Float[Tensor, "batch step vocab"], tokens: Int[Tensor, " step"], score: str) -> Tensor:
    if score == "logit":
        out = logits
    elif score == "logprob":
        out = logits.float().log_softmax(-1)
    elif score == "prob":
        out = logits.float().softmax(-1)
    else:
        raise InterpError(f"Unknown saliency score {score!r}; use 'logprob', 'logit' or 'prob'.")
    return out.gather(-1, tokens.expand(logits.shape[0], -1)[..., None])[..., 0]


def _pick(scores: Float[Tensor, "batch step"], rows: Tensor | None) -> Tensor:
    return scores if rows is None else scores.gather(1, rows.long().view(-1, 1))[:, 0]


def text_target(hf, ids: Int[Tensor, "1 pos"], prompt_len: int, score: str = "logprob") -> Target:
    """Saliency over the prompt's input embeddings for the tokens `ids[:, prompt_len:]`."""
    embeds = hf.get_input_embeddings()(ids).detach()
    prompt, tail, tokens = embeds[:, :prompt_len], embeds[:, prompt_len:], ids[0, prompt_len:]

    def forward(x: Tensor, rows: Tensor | None = None) -> Tensor:
        full = torch.cat([x, tail.expand(x.shape[0], -1, -1)], dim=1)
        logits = hf(inputs_embeds=full).logits[:, prompt_len - 1 : -1]
        return _pick(_scores(logits, tokens, score), rows)

    def reduce(attr: Tensor) -> Tensor:  # [step, pos, d_model] -> [step, pos]
        return attr.sum(-1).abs()

    return Target(prompt, forward, len(tokens), "text", reduce, hf)


def real_frames(n_samples: int, total: int = 3000) -> int:
    """Log-mel frames that hold real audio, rounded up to whole encoder positions."""
    frames = math.ceil(n_samples / SPEECH_HOP)
    return min(total, FRAMES_PER_POSITION * math.ceil(frames / FRAMES_PER_POSITION))


def speech_target(
    hf,
    features: Float[Tensor, "1 mel frame"],
    tokens: Int[Tensor, " step"],
    prefix: Int[Tensor, " pos"],
    n_frames: int,
    score: str = "logprob",
) -> Target:
    """Saliency over the real log-mel frames for Whisper's generated `tokens` after `prefix` (SOT ...)."""
    x0, rest = features[:, :, :n_frames], features[:, :, n_frames:]
    decoder_in = torch.cat([prefix, tokens[:-1]])[None]
    first = len(prefix) - 1

    def forward(x: Tensor, rows: Tensor | None = None) -> Tensor:
        b = x.shape[0]
        full = torch.cat([x, rest.expand(b, -1, -1)], dim=-1)
        logits = hf(input_features=full, decoder_input_ids=decoder_in.expand(b, -1)).logits[:, first:]
        return _pick(_scores(logits, tokens, score), rows)

    def reduce(attr: Tensor) -> Tensor:  # [step, mel, frame] -> [step, position]
        per_frame = attr.abs().sum(1)
        return per_frame.view(per_frame.shape[0], -1, FRAMES_PER_POSITION).sum(-1)

    return Target(x0, forward, len(tokens), "speech", reduce, hf)


# --------------------------------------------------------------------------- methods


def _gradient_method(cls_name: str):
    def run(target: Target, cfg: SaliencyConfig) -> Tensor:
        import captum.attr as ca

        method = getattr(ca, cls_name)(target.forward)
        chunk = cfg.internal_batch_size or target.n_steps
        out = []
        for start in track(range(0, target.n_steps, chunk), cfg.method, enabled=cfg.show_progress):
            rows = torch.arange(start, min(start + chunk, target.n_steps), device=target.inputs.device)
            x = target.inputs.expand(len(rows), *target.inputs.shape[1:]).clone().requires_grad_(True)
            kw = {"additional_forward_args": (rows,)}
            if cls_name == "IntegratedGradients":
                kw.update(
                    n_steps=cfg.n_steps,
                    baselines=cfg.baseline,
                    internal_batch_size=cfg.internal_batch_size or len(rows) * cfg.n_steps,
                )
            # also inside an enclosing capture (`with interp.ablate(...)`), which has none
            with torch.enable_grad():
                out.append(method.attribute(x, **kw).detach())
        return torch.cat(out)

    return run


def _occlusion(target: Target, cfg: SaliencyConfig) -> Tensor:
    import captum.attr as ca

    d = target.inputs.shape[1:]
    if target.kind == "text":
        window = (cfg.window or (1,))[:1] + (d[-1],)
        stride = (cfg.stride or window[:1])[:1] + (d[-1],)
    else:
        window = tuple(cfg.window or (16, 10))
        stride = tuple(cfg.stride or window)
    if len(window) != len(d) or any(w < 1 or w > n for w, n in zip(window, d)):
        raise InterpError(f"Occlusion window {window} does not fit the input shape {tuple(d)}.")
    with torch.no_grad():
        return ca.Occlusion(target.forward).attribute(
            target.inputs,
            sliding_window_shapes=window,
            strides=stride,
            baselines=cfg.baseline,
            perturbations_per_eval=cfg.internal_batch_size or 1,
            show_progress=cfg.show_progress,
        )


METHODS: dict[str, Callable[[Target, SaliencyConfig], Tensor]] = {
    "input_x_gradient": _gradient_method("InputXGradient"),
    "integrated_gradients": _gradient_method("IntegratedGradients"),
    "occlusion": _occlusion,
}


def attribute(target: Target, cfg: SaliencyConfig) -> Tensor:
    """Raw captum attributions `[step, *input_shape]` (one row per generated token)."""
    if cfg.method not in METHODS:
        raise InterpError(f"Unknown saliency method {cfg.method!r}; choose one of {', '.join(METHODS)}.")
    if target.n_steps == 0:
        raise InterpError("The model generated no token to explain; raise max_new_tokens or check the input.")
    with _frozen(target.module):
        return METHODS[cfg.method](target, cfg)


@contextmanager
def _frozen(module: torch.nn.Module | None):
    """Parameters need no gradient while we attribute to inputs (saves the weight-gradient work)."""
    params = [p for p in module.parameters() if p.requires_grad] if module is not None else []
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


# --------------------------------------------------------------------------- end to end


def _attention(m, inputs: dict, stack: str, rows: slice) -> Float[Tensor, "layer head query key"]:
    """Every layer's attention in one stack for the query `rows` (batch of one), via `interp.capture`.

    Only the requested rows are materialised: `layer x head x rows x key` floats.
    """
    n_layers = m.adapter.n_layers(stack)
    with capture(m, patterns=Patterns(stack=stack, queries=rows)) as rec:
        m.hf(**inputs)
    key = (lambda i: i) if stack == m.adapter.main_stack else (lambda i: (stack, i))
    return torch.stack([rec.patterns[key(i)][0] for i in range(n_layers)]).float()


def _cut(attn: Float[Tensor, "layer head step key"], n_keys: int) -> tuple[Tensor, Tensor]:
    real = attn[..., :n_keys]
    mass = real.sum(-1)
    return real / mass.clamp_min(1e-30)[..., None], mass


@torch.no_grad()
def _generate_text(m, prompt: str | list[int], max_new_tokens: int, chat: bool) -> tuple[Tensor, int]:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise InterpError("The prompt is empty; give the text whose continuation you want explained.")
        ids = m.encode([prompt], chat=chat)["input_ids"]
    else:
        if len(prompt) == 0:
            raise InterpError("The prompt is empty; give at least one token id.")
        ids = torch.tensor([list(prompt)], device=m.device)
    if ids.shape[1] < 2:
        raise InterpError("The prompt has a single token; agreement needs at least two input positions.")
    eos = getattr(m.tokenizer, "eos_token_id", None) if m.tokenizer is not None else None
    out = m.hf.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=eos if eos is not None else 0,
    )
    gen = out[0, ids.shape[1] :]
    if eos is not None and (gen == eos).any():
        gen = gen[: int((gen == eos).nonzero()[0])]
    return torch.cat([ids[0], gen])[None], ids.shape[1]


def _labels(tokenizer, ids: list[int]) -> list[str]:
    return tokenizer.convert_ids_to_tokens(ids) if tokenizer is not None else [str(i) for i in ids]


def explain_text(
    model,
    prompt: str | list[int],
    *,
    max_new_tokens: int = 8,
    config: SaliencyConfig | None = None,
    chat: bool = False,
) -> SaliencyReport:
    """Greedy continuation of `prompt`, saliency of each new token over the prompt, and self-attention.

    Attention rows are those predicting each new token, cut to the prompt and renormalised
    (`report.input_mass` keeps the share they put on the prompt before that).
    """
    cfg = config or SaliencyConfig()
    m = as_model(model)
    ids, p = _generate_text(m, prompt, max_new_tokens, chat)
    target = text_target(m.hf, ids, p, cfg.score)
    sal = target.reduce(attribute(target, cfg))
    attn = _attention(m, {"input_ids": ids}, m.adapter.main_stack, slice(p - 1, ids.shape[1] - 1))
    attn, mass = _cut(attn, p)
    return SaliencyReport(
        model=m.name,
        method=cfg.method,
        stack=m.adapter.main_stack,
        saliency=sal.float(),
        attention=attn,
        input_mass=mass,
        inputs=_labels(m.tokenizer, ids[0, :p].tolist()),
        tokens=_labels(m.tokenizer, ids[0, p:].tolist()),
        head_sets={},
        token_ids=ids[0, p:].tolist(),
    )


def explain_speech(
    model,
    waveform: Float[np.ndarray, " sample"],
    *,
    rate: int = 16_000,
    tokenizer=None,
    feature_extractor=None,
    max_new_tokens: int = 64,
    config: SaliencyConfig | None = None,
) -> SaliencyReport:
    """Whisper: greedy transcript of a mono waveform, saliency over real encoder frames, cross-attention.

    A waveform at another `rate` is resampled to 16 kHz. Head sets: the model's alignment heads
    (`generation_config.alignment_heads`). Audio longer than 30 s is refused (split it with
    `interp.tasks.speech.chunk_waveform`). Saliency explains the raw log-probability, before
    generation's token suppression.
    """
    cfg = config or SaliencyConfig()
    m = as_model(model)
    tok = tokenizer or m.tokenizer
    fx = feature_extractor or m.extras.get("feature_extractor")
    if fx is None:
        raise InterpError(
            "Speech saliency needs the model's feature extractor: pass feature_extractor=... "
            "(load_whisper_tiny_en returns it) or load the model with interp.load."
        )
    wave = resample(check_waveform(waveform, rate=rate), rate, SAMPLE_RATE)
    param = next(m.hf.parameters())
    features = fx(wave, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features.to(
        param.device, param.dtype
    )
    with torch.no_grad():
        gen = m.hf.generate(features, max_new_tokens=max_new_tokens)[0]
    gc = m.hf.generation_config
    specials = {gc.eos_token_id, gc.decoder_start_token_id, getattr(gc, "no_timestamps_token_id", None)}
    gen = torch.tensor([t for t in gen.tolist() if t not in specials], device=param.device)
    prefix = torch.tensor([gc.decoder_start_token_id, gc.no_timestamps_token_id], device=param.device)
    n_frames = real_frames(len(wave), features.shape[-1])
    target = speech_target(m.hf, features, gen, prefix, n_frames, cfg.score)
    sal = target.reduce(attribute(target, cfg))
    decoder_in = torch.cat([prefix, gen[:-1]])[None]
    attn = _attention(
        m,
        {"input_features": features, "decoder_input_ids": decoder_in},
        "cross",
        slice(len(prefix) - 1, None),
    )
    attn, mass = _cut(attn, n_frames // FRAMES_PER_POSITION)
    heads = [tuple(h) for h in (getattr(gc, "alignment_heads", None) or [])]
    return SaliencyReport(
        model=m.name,
        method=cfg.method,
        stack="cross",
        saliency=sal.float(),
        attention=attn,
        input_mass=mass,
        inputs=[f"{FRAMES_PER_POSITION * i * SPEECH_HOP / SAMPLE_RATE:.2f}s" for i in range(attn.shape[-1])],
        tokens=_labels(tok, gen.tolist()),
        head_sets={"alignment": heads} if heads else {},
        token_ids=gen.tolist(),
    )


__all__ = [
    "METHODS",
    "SaliencyConfig",
    "Target",
    "attribute",
    "explain_speech",
    "explain_text",
    "real_frames",
    "speech_target",
    "text_target",
]
