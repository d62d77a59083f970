"""Automatic adapters: find the blocks, attention, output projection and MLP of any transformers LM.

`interp` captures attention inside transformers' `AttentionInterface`, so an architecture needs
no code of its own; it only needs an `Adapter` saying where things are. `infer_stack` reads that
off the module tree of the language model (the text tower of a multimodal model):

- blocks: the `nn.ModuleList` under the decoder whose items hold an attention module, as long as the
  text config's layer count (else the longest such list: vision / audio towers lose the tie);
- attention: the submodule of a block whose class's `forward` calls the attention interface
  (`ALL_ATTENTION_FUNCTIONS`); hybrid models (Mamba / linear-attention layers) keep the list of
  blocks that have one;
- output projection: the linear layer inside (or next to) the attention module whose input is
  `n_heads x head_dim` wide — its input is the per-head output `z`;
- z transform: the source line of an output gate / sub-norm between the attention function and the
  output projection (Qwen3-Next, BitNet ...), where the projection's input is not the heads' `z`;
- MLP: the block's `mlp` / `feed_forward` / `ffn` ... submodule (MoE blocks included), if any.

Head counts come from the attention module itself when it says (`num_heads`, `head_dim`,
`num_key_value_groups`), else from the text config.

    >>> from transformers import Qwen2Config, Qwen2ForCausalLM
    >>> m = Qwen2ForCausalLM(Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    ...                                  num_attention_heads=4, num_key_value_heads=2, vocab_size=64))
    >>> s = infer_stack(m)
    >>> (s.stack.blocks, s.stack.attn, s.stack.out_proj, s.stack.mlp, s.n_heads, s.n_kv_heads, s.head_dim)
    ('model.layers', 'self_attn', 'o_proj', 'mlp', 4, 2, 8)

Refusals (`UnsupportedArchitectureError`, with the reason): no block whose attention calls the
interface (Falcon, Bloom, MPT, GPT-Neo, Mamba ...: raised by `infer_stack`); `refusal(model)` is
the hook for attention terms the interface function cannot reproduce (none at present: learned
sinks, as in gpt-oss, are applied exactly). Memory: nothing is run; only the module tree and source
files are read.
"""

import inspect
from dataclasses import dataclass
from functools import cache

from torch import nn

from interp.errors import UnsupportedArchitectureError
from interp.models.stack import Stack

_OUT_NAMES = ("o_proj", "out_proj", "dense", "c_proj", "wo", "o", "proj", "out", "output_proj", "attn_out")
_NOT_OUT = ("query", "key", "value", "q_", "k_", "v_", "qkv", "c_attn", "gate", "in_proj", "lora", "norm")
_MLP_NAMES = ("mlp", "feed_forward", "ffn", "block_sparse_moe", "moe", "mlp_block", "ff", "feedforward",
              "fc2", "output")


@dataclass(frozen=True)
class Inferred:
    """What `infer_stack` found: a `Stack` and the head geometry."""

    stack: Stack
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_model: int
    attn_layers: tuple[int, ...]  # blocks that have an attention module (all, unless hybrid)


@cache
def calls_interface(cls: type) -> bool:
    """Whether `cls.forward` dispatches through transformers' attention interface."""
    try:
        source = inspect.getsource(cls.forward)
    except (OSError, TypeError, AttributeError):
        return False
    return "ALL_ATTENTION_FUNCTIONS" in source or "attention_interface" in source


def _attention_path(block: nn.Module) -> str | None:
    """The shallowest submodule of `block` whose forward calls the attention interface."""
    found = [name for name, mod in block.named_modules() if name and calls_interface(type(mod))]
    self_attn = [n for n in found if "cross" not in n and "encoder_attn" not in n]
    return min(self_attn or found, key=lambda n: (n.count("."), len(n)), default=None)


def _language_model(model: nn.Module) -> tuple[nn.Module, str]:
    """The text decoder inside `model` (itself for plain LMs) and its path from `model`."""
    decoder = model
    get = getattr(model, "get_decoder", None)
    if callable(get):
        try:
            decoder = get() or model
        except (AttributeError, NotImplementedError, ValueError):
            decoder = model
    if decoder is model or not any(isinstance(m, nn.ModuleList) for m in decoder.modules()):
        return model, ""  # (some models name their LM head `decoder`)
    for name, mod in model.named_modules():
        if mod is decoder:
            return decoder, name
    return model, ""


def _blocks(root: nn.Module, n_layers: int | None) -> tuple[str, nn.ModuleList]:
    """The module list under `root` with attention in its items: `n_layers` long if one is, else the
    longest."""
    best, rank = None, None
    for name, mod in root.named_modules():
        if not isinstance(mod, nn.ModuleList) or len(mod) == 0:
            continue
        if any(_attention_path(item) is not None for item in mod):
            r = (len(mod) == n_layers, len(mod), -name.count("."))
            if rank is None or r > rank:
                best, rank = (name, mod), r
    if best is None:
        raise UnsupportedArchitectureError(
            f"{type(root).__name__} has no layer whose attention calls transformers' AttentionInterface "
            f"(ALL_ATTENTION_FUNCTIONS); interp cannot capture its attention exactly."
        )
    return best


def _text_config(model: nn.Module):
    config = model.config
    get = getattr(config, "get_text_config", None)
    return get(decoder=True) if callable(get) else config


def _first(obj, *names):
    for name in names:
        value = getattr(obj, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _geometry(attn: nn.Module, config) -> tuple[int, int, int, int]:
    """(n_heads, n_kv_heads, head_dim, d_model) from the attention module, then the config."""
    d_model = _first(config, "hidden_size", "n_embd", "d_model", "dim")
    n_heads = _first(attn, "num_heads", "num_attention_heads", "n_heads", "n_head") or _first(
        config, "num_attention_heads", "n_head", "num_heads", "n_heads", "decoder_attention_heads")
    head_dim = _first(attn, "v_head_dim", "head_dim", "attention_head_size", "head_size") or _first(
        config, "v_head_dim", "head_dim", "d_kv", "kv_channels") or d_model // n_heads  # z's width: values
    groups = _first(attn, "num_key_value_groups")
    n_kv = n_heads // groups if groups else _first(attn, "num_key_value_heads", "num_kv_heads") or _first(
        config, "num_key_value_heads", "num_kv_heads", "n_kv_heads") or n_heads
    if getattr(config, "multi_query", False) and not groups:
        n_kv = 1
    return n_heads, n_kv, head_dim, d_model


def _in_width(mod: nn.Module) -> int | None:
    if isinstance(mod, nn.Linear):
        return mod.in_features
    weight = getattr(mod, "weight", None)  # GPT-2's Conv1D keeps weight as [in, out]
    if type(mod).__name__ == "Conv1D" and weight is not None:
        return weight.shape[0]
    return None


def _out_proj(block: nn.Module, attn_path: str, width: int) -> tuple[str, bool]:
    """(path, relative to the block?) of the linear layer fed by the heads' concatenated output."""
    attn = block.get_submodule(attn_path)
    scopes = [(attn, False)]
    parent = attn_path.rpartition(".")[0]
    if parent:  # BERT-style: `attention.self` computes, `attention.output.dense` projects
        scopes.append((block.get_submodule(parent), True))
    found = []
    for scope, in_block in scopes:
        for n, m in scope.named_modules():
            full = f"{parent}.{n}" if in_block else n
            if n and _in_width(m) == width and not (in_block and full.startswith(attn_path + ".")):
                found.append((n.split("."), full, in_block))
    for ok in (lambda parts: parts[-1] in _OUT_NAMES,  # o_proj, dense, c_proj ...
               lambda parts: any(p in _OUT_NAMES for p in parts),  # o_proj.linear (a wrapped linear)
               lambda parts: not any(p in ("q", "k", "v") or any(w in p.lower() for w in _NOT_OUT)
                                     for p in parts)):
        for parts, full, in_block in found:
            if ok(parts):
                return full, in_block
    raise UnsupportedArchitectureError(
        f"found no output projection ({width} inputs) in {type(attn).__name__}; per-head outputs `z` cannot "
        f"be located. Add a declarative Family for this model in interp.models.adapters.FAMILIES."
    )


def _mlp(block: nn.Module) -> str | None:
    names = dict(block.named_children())
    for name in _MLP_NAMES:
        if name in names:
            return name
    for name, mod in names.items():
        kind = type(mod).__name__.lower()
        if "mlp" in kind or "moe" in kind or "feedforward" in kind:
            return name
    return None


def infer_stack(model: nn.Module) -> Inferred:
    """Infer the decoder stack of a transformers causal LM (see the module docstring)."""
    root, prefix = _language_model(model)
    config = _text_config(model)
    path, blocks = _blocks(root, _first(config, "num_hidden_layers", "n_layer", "num_layers", "n_layers"))
    attn_paths = [_attention_path(b) for b in blocks]
    attn_layers = tuple(i for i, p in enumerate(attn_paths) if p is not None)
    paths = {attn_paths[i] for i in attn_layers}
    if len(paths) > 1:
        raise UnsupportedArchitectureError(
            f"attention lives at different paths in different blocks ({', '.join(sorted(paths))}); add a "
            f"declarative Family for {type(model).__name__} in interp.models.adapters.FAMILIES."
        )
    attn_path = paths.pop()
    first = blocks[attn_layers[0]]
    n_heads, n_kv, head_dim, d_model = _geometry(first.get_submodule(attn_path), config)
    out_path, in_block = _out_proj(first, attn_path, n_heads * head_dim)
    blocks_path = f"{prefix}.{path}" if prefix and path else prefix or path
    stack = Stack(blocks_path, attn=attn_path, out_proj=out_path, mlp=_mlp(first), out_proj_in_block=in_block,
                  attn_layers=None if len(attn_layers) == len(blocks) else attn_layers,
                  z_transform=None if in_block else z_transform(first.get_submodule(attn_path), out_path))
    return Inferred(stack, n_heads, n_kv, head_dim, d_model, attn_layers)


def z_transform(attn: nn.Module, out_proj: str) -> str | None:
    """The source line where `attn` changes the heads' output between the attention function and its
    output projection (an output gate, a sub-norm), or None when the projection reads `z` unchanged."""
    try:
        src = inspect.getsource(type(attn).forward)
    except (OSError, TypeError):
        return None
    leaf = out_proj.rpartition(".")[2]
    tail = src.partition("attention_interface(")[2].partition(f"self.{leaf}(")[0]
    hits = [" ".join(x.split()) for x in tail.splitlines()
            if any(w in x for w in ("sigmoid", "gate", "norm")) and not x.strip().startswith("#")]
    return hits[0] if hits else None


def refusal(model: nn.Module) -> str | None:
    """Why `interp` cannot capture `model` exactly, or None when it can.

    The hook for attention terms the interface function cannot reproduce; learned attention sinks
    (gpt-oss `s_aux`) are applied exactly, so nothing is refused here at present.
    """
    return None


__all__ = ["Inferred", "infer_stack", "refusal", "calls_interface", "z_transform"]
