"""Architecture adapters: where the layers, attention and MLP of each model family live.

An adapter is declarative: per attention *stack* (a decoder-only model has one, "decoder";
Whisper and T5 also have "encoder" and "cross") it names the list of blocks, the attention module
inside a block, its output projection (whose input is the per-head output `z`) and the MLP.
Head counts come from the config. Everything else — capturing, editing — is generic.

    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> m = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    ...                                  num_attention_heads=4, num_key_value_heads=2, vocab_size=64))
    >>> a = adapter_for(m)
    >>> (a.family, a.n_layers(), a.n_heads, a.n_kv_heads, a.head_dim)
    ('llama', 2, 4, 2, 8)
"""

from dataclasses import dataclass, field

import torch
from torch import nn

from interp.errors import UnsupportedArchitectureError, check_index
from interp.models.infer import infer_stack, refusal
from interp.models.stack import Stack


@dataclass(frozen=True)
class Family:
    """A model family: its stacks (the first is the main one) and config overrides."""

    stacks: dict[str, Stack]
    n_heads_field: str | None = None  # config field for query heads, if not a common name
    head_dim_field: str | None = None


_LLAMA_LIKE = Family({"decoder": Stack("model.layers", attn="self_attn", out_proj="o_proj")})
_WHISPER_LIKE = Family(
    {
        "decoder": Stack("model.decoder.layers", attn="self_attn", out_proj="out_proj", mlp="fc2"),
        "encoder": Stack("model.encoder.layers", attn="self_attn", out_proj="out_proj", mlp="fc2",
                         causal=False),
        "cross": Stack("model.decoder.layers", attn="encoder_attn", out_proj="out_proj", mlp=None,
                       causal=False),
    },
    n_heads_field="decoder_attention_heads",
)

FAMILIES: dict[str, Family] = {
    **{
        name: _LLAMA_LIKE
        for name in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "smollm3", "olmo", "olmo2",
                     "phi3", "granite", "stablelm", "cohere", "starcoder2")
    },
    "gpt2": Family({"decoder": Stack("transformer.h", attn="attn", out_proj="c_proj")}),
    "gpt_neox": Family({"decoder": Stack("gpt_neox.layers", attn="attention", out_proj="dense")}),
    "whisper": _WHISPER_LIKE,
    "t5": Family(
        {
            "decoder": Stack("decoder.block", attn="layer.0.SelfAttention", out_proj="o", mlp="layer.2"),
            "encoder": Stack("encoder.block", attn="layer.0.SelfAttention", out_proj="o", mlp="layer.1",
                             causal=False),
            "cross": Stack("decoder.block", attn="layer.1.EncDecAttention", out_proj="o", mlp=None,
                           causal=False),
        },
        n_heads_field="num_heads",
        head_dim_field="d_kv",
    ),
}


def _config_value(config, *names, default=None):
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


@dataclass
class Adapter:
    """A model's architecture as `interp` sees it. Build it with `adapter_for(model)`."""

    family: str
    model: nn.Module = field(repr=False)
    stacks: dict[str, Stack]
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_model: int
    n_ctx: int | None

    @property
    def main_stack(self) -> str:
        return next(iter(self.stacks))

    def blocks(self, stack: str | None = None) -> nn.ModuleList:
        return _resolve(self.model, self._stack(stack).blocks)

    def n_layers(self, stack: str | None = None) -> int:
        return len(self.blocks(stack))

    def attention(self, layer: int, stack: str | None = None) -> nn.Module:
        spec, layer = self._stack(stack), self.check_layer(layer, stack)
        if spec.attn_layers is not None and layer not in spec.attn_layers:
            raise UnsupportedArchitectureError(
                f"block {layer} of {self.family} has no attention (a recurrent / linear-attention layer of a "
                f"hybrid model); its attention layers are {list(spec.attn_layers)}."
            )
        return self.blocks(stack)[layer].get_submodule(spec.attn)

    def attention_layers(self, stack: str | None = None) -> list[int]:
        """The blocks that have an attention module (all of them except in hybrid models)."""
        spec = self._stack(stack)
        return list(spec.attn_layers) if spec.attn_layers is not None else list(range(self.n_layers(stack)))

    def out_proj(self, layer: int, stack: str | None = None) -> nn.Module:
        spec = self._stack(stack)
        if spec.out_proj_in_block:
            self.attention(layer, stack)  # validates the layer
            return self.blocks(stack)[layer % self.n_layers(stack)].get_submodule(spec.out_proj)
        return self.attention(layer, stack).get_submodule(spec.out_proj)

    def mlp(self, layer: int, stack: str | None = None) -> nn.Module:
        spec = self._stack(stack)
        if spec.mlp is None:
            raise UnsupportedArchitectureError(f"stack {stack!r} of {self.family} has no MLP of its own.")
        return self.blocks(stack)[self.check_layer(layer, stack)].get_submodule(spec.mlp)

    def attention_sites(self) -> dict[nn.Module, tuple[str, int]]:
        """Every attention module mapped to its (stack, layer)."""
        return {self.attention(i, s): (s, i) for s in self.stacks for i in self.attention_layers(s)}

    def kv_head_of(self, head: int) -> int:
        return head // (self.n_heads // self.n_kv_heads)

    def check_layer(self, layer: int, stack: str | None = None) -> int:
        return check_index("layer", layer, len(self.blocks(stack)),
                           where=f"{self.family} ({self._name(stack)})")

    def check_head(self, head: int) -> int:
        return check_index("head", head, self.n_heads, where=f"{self.family} ({self.n_heads} query heads)")

    def _stack(self, stack: str | None) -> Stack:
        name = self._name(stack)
        if name not in self.stacks:
            raise UnsupportedArchitectureError(
                f"{self.family} has no attention stack {name!r}; it has {', '.join(self.stacks)}."
            )
        return self.stacks[name]

    def _name(self, stack: str | None) -> str:
        return stack or self.main_stack

    def summary(self) -> dict:
        return {
            "family": self.family,
            "stacks": {s: self.n_layers(s) for s in self.stacks},
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "d_model": self.d_model,
            "n_ctx": self.n_ctx,
        }


def _resolve(model: nn.Module, path: str) -> nn.Module:
    """`model.get_submodule(path)`, also for the bare base model (path without its first part)."""
    for candidate in (path, path.partition(".")[2]):
        if not candidate:
            continue
        try:
            return model.get_submodule(candidate)
        except AttributeError:
            continue
    raise UnsupportedArchitectureError(f"expected a module at {path!r} in {type(model).__name__}; none "
                                       "found.")


def _has_module(model: nn.Module, path: str) -> bool:
    try:
        _resolve(model, path)
        return True
    except UnsupportedArchitectureError:
        return False


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter of a Hugging Face model: declarative where `FAMILIES` has one, else inferred.

    Raises `UnsupportedArchitectureError` (with the reason) for models whose attention `interp`
    cannot capture exactly: attention outside transformers' `AttentionInterface` (Falcon, Bloom,
    MPT, GPT-Neo, Mamba ...) or terms its attention function does not reproduce (learned sinks).
    """
    config = model.config
    family_name = config.model_type
    reason = refusal(model)
    if reason is not None:
        raise UnsupportedArchitectureError(f"interp cannot capture {family_name!r} models exactly: {reason}")
    family = FAMILIES.get(family_name)
    if family is not None:  # a family's model classes may lack some stacks (WhisperForCausalLM: no encoder)
        stacks = {n: s for n, s in family.stacks.items() if _has_module(model, s.blocks)}
        family = Family(stacks, family.n_heads_field, family.head_dim_field) if stacks else None
    if family is None:
        try:
            found = infer_stack(model)
        except UnsupportedArchitectureError as err:
            raise UnsupportedArchitectureError(
                f"interp cannot adapt model type {family_name!r} ({type(model).__name__}): {err} Supported: "
                "models whose attention calls ALL_ATTENTION_FUNCTIONS (docs/coverage.md lists each "
                f"causal-LM type); declarative families: {', '.join(sorted(FAMILIES))}."
            ) from err
        text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        n_ctx = _config_value(text, "max_position_embeddings", "n_positions", "max_target_positions")
        return Adapter(family_name, model, {"decoder": found.stack}, found.n_heads, found.n_kv_heads,
                       found.head_dim, found.d_model, n_ctx)
    text = getattr(config, "text_config", None) or config
    n_heads = _config_value(text, *(f for f in (family.n_heads_field,) if f), "num_attention_heads", "n_head")
    d_model = _config_value(text, "hidden_size", "n_embd", "d_model")
    head_dim = _config_value(text, *(f for f in (family.head_dim_field,) if f), "head_dim",
                             default=d_model // n_heads)
    n_kv = _config_value(text, "num_key_value_heads", default=n_heads)
    n_ctx = _config_value(text, "max_position_embeddings", "n_positions", "max_target_positions")
    return Adapter(family_name, model, family.stacks, n_heads, n_kv, head_dim, d_model, n_ctx)


def param_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (CPU for parameterless modules)."""
    for p in module.parameters():
        return p.device
    return torch.device("cpu")
