"""`Model`: a loaded model, its tokenizer and its adapter, behind one small object.

    >>> m = interp.load("smollm2")                          # doctest: +SKIP
    >>> batch = m.encode(["Hello there", "Hi"])             # left-padded, context-checked
    >>> logits = m(**batch).logits                          # the HF forward, under no_grad
    >>> m.hf, m.tokenizer, m.adapter.n_heads                # the pieces, for everything else

`backend` says which front end the user asked for: "hf" (the module itself), "tl" (`m.bridge`, a
TransformerLens `TransformerBridge` over the same weights) or "nnsight" (`m.nnsight`, an nnsight
`LanguageModel` over the same module). `interp.capture` works with all three.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedModel

from interp.errors import InterpError, PromptTooLongError
from interp.models.adapters import Adapter, adapter_for, param_device


@dataclass
class Model:
    hf: PreTrainedModel
    tokenizer: Any
    adapter: Adapter
    name: str
    backend: str = "hf"
    bridge: Any = field(default=None, repr=False)
    nnsight: Any = field(default=None, repr=False)
    extras: dict = field(default_factory=dict, repr=False)  # e.g. a feature extractor for speech models

    @property
    def device(self) -> torch.device:
        return param_device(self.hf)

    @torch.no_grad()
    def __call__(self, **inputs):
        """The HF forward pass under `torch.no_grad()` (inputs moved to the model's device)."""
        return self.hf(**{k: v.to(self.device) if torch.is_tensor(v) else v for k, v in inputs.items()})

    def encode(
        self,
        prompts: str | Sequence[str],
        *,
        chat: bool = False,
        system: str | None = None,
        assistant_prefix: str = "",
        add_special_tokens: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Tokenize prompts into a left-padded batch (`input_ids`, `attention_mask`) on the model's device.

        `chat=True` wraps each prompt in the tokenizer's chat template as a user turn and opens
        the assistant turn (optionally pre-filled with `assistant_prefix`). Raises
        `PromptTooLongError` when a prompt does not fit the context window.
        """
        if self.tokenizer is None:
            raise InterpError(f"{self.name} was loaded without a tokenizer; pass token ids to the model "
                              f"directly, or save a tokenizer next to the weights.")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise InterpError(f"encode needs a non-empty list of strings; got {prompts!r}.")
        if chat:
            prompts = [self.chat_prompt(p, system=system) + assistant_prefix for p in prompts]
            add_special_tokens = False
        tok = self.tokenizer
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
        empty = [i for i, n in enumerate(batch["attention_mask"].sum(-1).tolist()) if n == 0]
        if empty:
            raise InterpError(f"prompt {empty[0]} encodes to no tokens (an empty string?); give every prompt "
                              "some text, or add_special_tokens=True with a tokenizer that adds a BOS "
                              "token.")
        self.check_length(batch["input_ids"].shape[1])
        return {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}

    def chat_prompt(self, user: str, *, system: str | None = None) -> str:
        """`user` as a chat-template string ending where the assistant's answer begins."""
        messages = (([{"role": "system", "content": system}] if system else [])
                    + [{"role": "user", "content": user}])
        if getattr(self.tokenizer, "chat_template", None) is None:
            return user
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def check_length(self, n_tokens: int) -> None:
        n_ctx = self.adapter.n_ctx
        if n_ctx is not None and n_tokens > n_ctx:
            raise PromptTooLongError(
                f"the prompt has {n_tokens} tokens but {self.name} has a context window of {n_ctx}; "
                f"shorten the prompt (or the haystack) to at most {n_ctx} tokens."
            )

    def summary(self) -> dict:
        n_params = sum(p.numel() for p in self.hf.parameters())
        return {"name": self.name, "class": type(self.hf).__name__, "backend": self.backend,
                "parameters": n_params, "dtype": str(next(self.hf.parameters()).dtype),
                "device": str(self.device), **self.adapter.summary()}


def as_model(obj, tokenizer=None) -> Model:
    """Accept an `interp.Model`, a HF `PreTrainedModel`, a TransformerLens bridge or an nnsight model."""
    if isinstance(obj, Model):
        return obj
    if isinstance(obj, PreTrainedModel):
        return Model(obj, tokenizer, adapter_for(obj),
                     getattr(obj.config, "name_or_path", "") or type(obj).__name__)
    hf = getattr(obj, "original_model", None)  # TransformerLens TransformerBridge
    if isinstance(hf, PreTrainedModel):
        return Model(hf, tokenizer or getattr(obj, "tokenizer", None), adapter_for(hf),
                     hf.config.name_or_path, backend="tl", bridge=obj)
    hf = getattr(obj, "_model", None)  # nnsight LanguageModel
    if isinstance(hf, PreTrainedModel):
        return Model(hf, tokenizer or getattr(obj, "tokenizer", None), adapter_for(hf),
                     hf.config.name_or_path, backend="nnsight", nnsight=obj)
    raise TypeError(
        f"interp cannot use a {type(obj).__name__}: pass an interp.Model (from interp.load), a transformers "
        f"PreTrainedModel, a TransformerLens TransformerBridge or an nnsight LanguageModel."
    )
