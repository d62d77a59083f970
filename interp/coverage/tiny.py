"""Tiny random models of any transformers model type: a generic config shrinker plus per-family fixes.

    >>> cfg = tiny_config("qwen3_next")            # doctest: +SKIP
    >>> cfg.num_hidden_layers, cfg.layer_types      # doctest: +SKIP
    (2, ['linear_attention', 'full_attention'])

`shrink` walks a config dict (sub-configs too) and makes every depth, width, head and expert count
tiny; per-layer lists and `{layer: ...}` dicts keep one layer of each kind (so a hybrid keeps an
attention layer); `OVERRIDES` fixes what the generic rules cannot know. Memory: a few MB per model
(vocabularies keep their size, up to ~260k rows x 64).
"""

import torch

LAYERS, HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FFN = 2, 64, 4, 2, 16, 128

# config field -> tiny value (callable: f(original value, original config dict))
_SIZES: dict[str, object] = {
    **dict.fromkeys(("num_hidden_layers", "n_layer", "n_layers", "num_layers", "decoder_layers",
                     "encoder_layers", "num_decoder_layers"), LAYERS),
    **dict.fromkeys(("hidden_size", "n_embd", "d_model", "embed_dim", "word_embed_proj_dim"), HIDDEN),
    **dict.fromkeys(("num_attention_heads", "n_head", "num_heads", "n_heads", "decoder_attention_heads",
                     "encoder_attention_heads"), HEADS),
    **dict.fromkeys(("num_key_value_heads", "num_kv_heads", "n_kv_heads", "multi_query_group_num"),
                    lambda v, d: 1 if v == 1 else HEADS if v == _n_heads(d) else KV_HEADS),
    **dict.fromkeys(("head_dim", "d_kv", "kv_channels", "qk_head_dim", "v_head_dim"), HEAD_DIM),
    **dict.fromkeys(("intermediate_size", "ffn_dim", "n_inner", "decoder_ffn_dim", "encoder_ffn_dim", "d_ff",
                     "ffn_hidden_size"), FFN),
    **dict.fromkeys(("moe_intermediate_size", "shared_expert_intermediate_size", "expert_intermediate_size"),
                    32),
    **dict.fromkeys(("num_experts", "n_routed_experts", "num_local_experts", "moe_num_experts"), 4),
    **dict.fromkeys(("num_experts_per_tok", "moe_topk", "top_k_experts"), 2),
    **dict.fromkeys(("n_group", "topk_group", "n_shared_experts", "first_k_dense_replace",
                     "num_expert_group"), 1),
    "num_experts_per_token": 2,
    "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "kv_lora_rank": 16, "q_lora_rank": 32,
    "linear_key_head_dim": 16, "linear_value_head_dim": 16, "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
    "sliding_window": 4,  # shorter than the test batch, so windows really cut
    # sparse-attention indexers (DeepSeek-V3.2 style) keep 4 of the 9 keys, so the selection bites
    "index_topk": 4,
    "rotary_dim": 8,
}
# fields whose default `None` means "derive it": the tiny value is set explicitly instead
_FILL_NONE = ("head_dim", "num_key_value_heads", "num_experts_per_tok", "n_routed_experts",
              "n_shared_experts")


def _n_heads(d: dict):
    return next((d[k] for k in ("num_attention_heads", "n_head", "num_heads", "n_heads") if k in d), None)


def _layer_selection(d: dict, n_orig: int) -> list[int]:
    """Indices of the original layers to keep: one of each kind in `layer_types`-like lists, first."""
    lists = [(k != "layer_types", v) for k, v in d.items()
             if isinstance(v, list) and len(v) == n_orig > LAYERS]
    keep: list[int] = []
    # attention kinds first
    for _, values in sorted(lists, key=lambda kv: (kv[0], -len({repr(x) for x in kv[1]}))):
        for i, x in enumerate(values):
            if i not in keep and all(repr(values[j]) != repr(x) for j in keep):
                keep.append(i)
    keep = sorted(keep[:LAYERS])
    for i in range(n_orig):
        if len(keep) >= LAYERS:
            break
        if i not in keep:
            keep = sorted(keep + [i])
    return keep


def _is_sub_config(key: str, value: dict) -> bool:
    return "model_type" in value or key.endswith("_config")


def shrink(d: dict) -> dict:
    """A config dict with every width, depth and count made tiny (sub-configs too)."""
    n_orig = next((d[k] for k in ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers")
                   if isinstance(d.get(k), int)), None)
    keep = _layer_selection(d, n_orig) if n_orig else None
    out = {}
    for k, v in d.items():
        if keep and isinstance(v, dict) and v and all(str(i).isdigit() for i in v):  # {layer index: ...}
            out[k] = {keep.index(int(i)): shrink(x) if isinstance(x, dict) else x
                      for i, x in v.items() if int(i) in keep}
        elif isinstance(v, dict) and _is_sub_config(k, v):
            out[k] = shrink(v)
        elif k in _SIZES and (isinstance(v, int) and not isinstance(v, bool)
                              or v is None and k in _FILL_NONE):
            new = _SIZES[k]
            out[k] = new(v, d) if callable(new) else min(v, new) if k == "sliding_window" else new
        elif keep and isinstance(v, list) and len(v) == n_orig and n_orig > LAYERS:
            out[k] = [v[i] for i in keep]
        else:
            out[k] = v
    if d.get("head_dim") is not None and d.get("head_dim") == d.get("qk_rope_head_dim"):  # MLA: rotary width
        out["head_dim"] = out["qk_rope_head_dim"]
    return out


# Per-family fixes to the generic shrink (config field -> value), each for a stated reason.
_MAMBA = dict(mamba_n_heads=8, mamba_d_head=16, mamba_d_state=16, mamba_chunk_size=16)
OVERRIDES: dict[str, dict] = {
    # mamba heads x head width must equal expand x hidden; the default has no attention layer at all
    "bamba": dict(_MAMBA, attn_layer_indices=[1]),
    "granitemoehybrid": dict(_MAMBA, layer_types=["mamba", "attention"]),
    # derived widths the generic rules miss; hybrid_layer_ids is derived too, but to_dict() keeps the
    # full-size ids
    "zamba2": dict(mamba_headdim=16, attention_hidden_size=128, attention_head_dim=32, num_query_groups=4,
                   mamba_d_state=16, chunk_size=16, hybrid_layer_ids=[1]),
    # the shared attention block is weight-tied across hybrid layers, so it needs two of them; derived widths
    "zamba": {"num_hidden_layers": 3, "layers_block_type": ["linear_attention", "hybrid", "hybrid"],
              "attention_hidden_size": 128, "attention_head_dim": 32, "mamba_dt_rank": 4},
    "zaya": dict(num_experts_per_tok=1),  # the only value it supports
    # to_dict() lists an "mlp" entry after each layer and doubles the counts (__post_init__ halves them);
    # the counts must add up to the depth
    "dory": {"num_hidden_layers": 4, "layer_types": ["sliding_attention", "mlp", "full_attention", "mlp"],
             "n_input_layers": 2, "n_recurrent_layers": 2, "n_output_layers": 0},
    # DbrxAttention reads attn_config.rope_theta (unused) and clamps q/k/v with clip_qkv, which None breaks
    "dbrx": {"attn_config": {"rope_theta": 1e4, "clip_qkv": 8.0, "kv_n_heads": 2}},
    # the vision / audio adapters must be as wide as their tower (in) and the text model (out)
    "dots3_note": {"vision_config": {"adapter_in_dim": HIDDEN, "adapter_out_dim": HIDDEN},
                   "audio_config": {"adapter_input_size": HIDDEN, "adapter_out_dim": HIDDEN}},
    # the local encoder / decoder see the global model's width; a 500k-row hash embedding (x6) is ~800 MB;
    # a window that cuts; the cache is built from the top config, which has no num_hidden_layers
    "blt": {"encoder_config": {"hidden_size_global": HIDDEN},
            "decoder_config": {"hidden_size_global": HIDDEN}, "encoder_hash_byte_group_vocab": 1000,
            "local_attention_window_len": 4, "use_cache": False},
    # one codebook: the test batch is [batch, seq] ids (K codebooks take [batch x K, seq] and give K logit
    # rows)
    **{t: {"decoder": {"num_codebooks": 1}} for t in ("musicgen", "musicgen_melody")},
    "ernie4_5_moe": dict(moe_k=2, moe_num_shared_experts=1, moe_layer_end_index=1),
    "gemma3n_text": dict(num_kv_shared_layers=0, laurel_rank=8, hidden_size_per_layer_input=16),
    # = layers per stack x H_cycles x (L_cycles + 1)
    "hrm_text": dict(num_layers_per_stack=1, num_hidden_layers=8),
    "jamba": dict(attn_layer_period=2, attn_layer_offset=1),  # default: attention every 8th block
    "recurrent_gemma": dict(block_types=["recurrent", "attention"]),
    "lfm2_moe": dict(num_dense_layers=1, layer_types=["conv", "full_attention"]),  # default: derived, broken
    "cohere_compass_text": dict(rope_parameters={k: {"rope_type": "default", "rope_theta": 1e4}
                                                 for k in ("full_attention", "sliding_attention")}),
    **dict.fromkeys(("qwen4_exp_text", "qwen4_exp"),
                    dict(indexer_n_heads=2, indexer_kv_heads=1, indexer_head_dim=16,
                                                          indexer_budget=8, indexer_compress_ratio=2)),
}


def tiny_config(model_type: str):
    """A 2-layer, 64-wide random config of `model_type` (generic `shrink` + `OVERRIDES`)."""
    from transformers import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    d = shrink(cls().to_dict())
    for k, v in OVERRIDES.get(model_type, {}).items():
        # only the fields given
        if isinstance(v, dict) and isinstance(d.get(k), dict) and _is_sub_config(k, d[k]):
            d[k] = {**d[k], **v}
            continue
        d[k] = v
        if isinstance(d.get("text_config"), dict):  # composite models: the text tower gets it too
            d["text_config"][k] = v
    config = cls.from_dict(d)
    text = config.get_text_config(decoder=True)
    if hasattr(text, "is_decoder") and not config.is_encoder_decoder:
        text.is_decoder = True  # BERT-style encoders used as causal LMs
    return config


def tiny_model(model_type: str, seed: int = 0):
    """A tiny random causal LM of `model_type` in fp32 eval mode, with eager attention."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    torch.manual_seed(seed)
    config = tiny_config(model_type)
    # X-MOD: one adapter per language
    if getattr(config, "languages", None) and hasattr(config, "default_language"):
        config.default_language = config.default_language or config.languages[0]
    cls = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    # MusicGen: the causal LM is the decoder, built from its config
    if not isinstance(config, cls.config_class):
        config = config.get_text_config(decoder=True)
    model = cls._from_config(config, attn_implementation="eager", dtype=torch.float32)
    return model.eval()


def _special_ids(config, out: set | None = None) -> set[int]:
    out = set() if out is None else out
    for k, v in config.to_dict().items() if hasattr(config, "to_dict") else config.items():
        if isinstance(v, dict):
            _special_ids(v, out)
        elif isinstance(k, str) and k.endswith(("_token_id", "_token_index", "_id", "_ids")):
            out.update(x for x in (v if isinstance(v, list) else [v]) if isinstance(x, int))
    return out


def padded_batch(model, lengths=(9, 5, 7), seed: int = 0) -> dict[str, torch.Tensor]:
    """A left-padded batch of random ordinary token ids (special / image ids avoided)."""
    emb = model.get_input_embeddings()
    # MusicGen: one per codebook
    vocab = (emb[0] if isinstance(emb, torch.nn.ModuleList) else emb).num_embeddings
    allowed = torch.tensor(sorted(set(range(3, min(vocab, 512))) - _special_ids(model.config)))
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = allowed[torch.randint(len(allowed), (len(lengths), width), generator=g)]
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    pad = getattr(model.config.get_text_config(decoder=True), "pad_token_id", None)
    for i, n in enumerate(lengths):
        mask[i, width - n:] = 1
        ids[i, : width - n] = pad if isinstance(pad, int) and 0 <= pad < vocab else 0
    return {"input_ids": ids, "attention_mask": mask}
