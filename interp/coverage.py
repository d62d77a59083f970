"""Architecture coverage: does `interp` capture every causal LM of the installed transformers exactly?

    python -m interp.coverage                       # all causal-LM model types -> docs/coverage.md
    python -m interp.coverage llama gpt2 gemma2     # a few types, table on stdout
    python -m interp.coverage --jobs 2 --time-limit 60 --out /tmp/coverage.md

For every model type in `MODEL_FOR_CAUSAL_LM_MAPPING_NAMES` it builds a tiny random model (2 layers,
small widths: `tiny_config`), runs a left-padded batch and checks, on the real (non-padding) rows:

    (a) patterns  captured `Patterns` == eager `output_attentions` (atol 1e-5, fp32)
    (b) logits    logits inside a capture == logits without one (atol 1e-4)
    (c) z         captured per-head `z`, flattened, == the input of the adapter's output projection
    (d) stats     streaming `Stats` (entropy, argmax, span mass, column totals) == from eager patterns

Statuses: `pass`; `fail` (routed through `AttentionInterface`, some check differs: a regression);
`unsupported` (interp refuses the architecture, with the reason); `skip` (no tiny model could be
built here: the reason names what is missing). Each type runs in a worker process under a time limit.
Memory: one tiny model per worker (a few MB, vocabularies up to ~260k rows x 64).
"""

from dataclasses import dataclass

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
                    lambda v, d: 1 if v == 1 else KV_HEADS),
    **dict.fromkeys(("head_dim", "d_kv", "kv_channels", "qk_head_dim", "v_head_dim"), HEAD_DIM),
    **dict.fromkeys(("intermediate_size", "ffn_dim", "n_inner", "decoder_ffn_dim", "encoder_ffn_dim", "d_ff",
                     "ffn_hidden_size"), FFN),
    **dict.fromkeys(("moe_intermediate_size", "shared_expert_intermediate_size", "expert_intermediate_size"), 32),
    **dict.fromkeys(("num_experts", "n_routed_experts", "num_local_experts", "moe_num_experts"), 4),
    **dict.fromkeys(("num_experts_per_tok", "moe_topk", "top_k_experts"), 2),
    **dict.fromkeys(("n_group", "topk_group", "n_shared_experts", "first_k_dense_replace"), 1),
    "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "kv_lora_rank": 16, "q_lora_rank": 32,
    "linear_key_head_dim": 16, "linear_value_head_dim": 16, "linear_num_key_heads": 2, "linear_num_value_heads": 4,
    "sliding_window": 4,  # shorter than the test batch, so windows really cut
}


def _layer_selection(d: dict, n_orig: int) -> list[int]:
    """Indices of the original layers to keep: one of each kind in `layer_types`-like lists, first."""
    lists = [v for k, v in d.items() if isinstance(v, list) and len(v) == n_orig and n_orig > LAYERS]
    keep: list[int] = []
    for values in sorted(lists, key=lambda v: -len({repr(x) for x in v})):
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


def shrink(d: dict) -> dict:
    """A config dict with every width, depth and count made tiny (sub-configs too)."""
    n_orig = next((d[k] for k in ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers")
                   if isinstance(d.get(k), int)), None)
    keep = _layer_selection(d, n_orig) if n_orig else None
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and ("model_type" in v or k.endswith("_config")):
            out[k] = shrink(v)
        elif k in _SIZES and isinstance(v, int) and not isinstance(v, bool):
            new = _SIZES[k]
            out[k] = new(v, d) if callable(new) else min(v, new) if k == "sliding_window" else new
        elif keep and isinstance(v, list) and len(v) == n_orig and n_orig > LAYERS:
            out[k] = [v[i] for i in keep]
        else:
            out[k] = v
    if d.get("head_dim") is not None and d.get("head_dim") == d.get("qk_rope_head_dim"):  # MLA: rotary width
        out["head_dim"] = out["qk_rope_head_dim"]
    return out


@dataclass
class Result:
    model_type: str
    status: str  # pass | fail | unsupported | skip
    reason: str = ""
    seconds: float = 0.0


# Per-family fixes to the generic shrink (config field -> value), each for a stated reason.
OVERRIDES: dict[str, dict] = {}


def causal_lm_types() -> dict[str, str]:
    """Every causal-LM model type of the installed transformers -> its model class name."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return dict(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def routed(model_type: str) -> bool:
    """Whether the modeling file of the type's causal-LM class dispatches via `ALL_ATTENTION_FUNCTIONS`."""
    import inspect

    import transformers

    try:
        cls = getattr(transformers, causal_lm_types()[model_type])
        return "ALL_ATTENTION_FUNCTIONS" in open(inspect.getsourcefile(cls)).read()
    except Exception:  # a class transformers cannot import here (missing optional dependency)
        return False


def tiny_config(model_type: str):
    """A 2-layer, 64-wide random config of `model_type` (generic `shrink` + `OVERRIDES`)."""
    from transformers import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    d = {**shrink(cls().to_dict()), **OVERRIDES.get(model_type, {})}
    config = cls.from_dict(d)
    text = config.get_text_config(decoder=True)
    if hasattr(text, "is_decoder") and not config.is_encoder_decoder:
        text.is_decoder = True  # BERT-style encoders used as causal LMs
    return config


def tiny_model(model_type: str, seed: int = 0):
    """A tiny random causal LM of `model_type` in fp32 eval mode, with eager attention."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type), attn_implementation="eager",
                                             dtype=torch.float32)
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
    vocab = model.get_input_embeddings().num_embeddings
    allowed = torch.tensor(sorted(set(range(3, min(vocab, 512))) - _special_ids(model.config)))
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = allowed[torch.randint(len(allowed), (len(lengths), width), generator=g)]
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    pad = model.config.get_text_config(decoder=True).pad_token_id
    for i, n in enumerate(lengths):
        mask[i, width - n:] = 1
        ids[i, : width - n] = pad if isinstance(pad, int) and 0 <= pad < vocab else 0
    return {"input_ids": ids, "attention_mask": mask}


def _gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item() if a.numel() else 0.0


def _stats_reference(p: torch.Tensor, real: torch.Tensor):
    """Entropy, first-key mass and column totals of eager patterns `p` over real query rows."""
    ent = -(p * torch.log(p.clamp_min(1e-38))).sum(-1)
    cols = (p * real[:, None, :, None]).sum(2)
    return ent, p[..., 0], cols


def check(model_type: str) -> Result:
    """Build a tiny `model_type`, run the four checks; a `Result` with the first failure's reason."""
    import interp
    from interp.errors import UnsupportedArchitectureError
    from interp.models.model import as_model

    try:
        model = tiny_model(model_type)
    except Exception as err:
        return Result(model_type, "skip", f"tiny model not buildable: {type(err).__name__}: {_short(err)}")
    try:
        m = as_model(model)
    except UnsupportedArchitectureError as err:
        return Result(model_type, "unsupported", _short(err, 300))
    batch = padded_batch(model)
    real = batch["attention_mask"].bool()
    try:
        with torch.no_grad():
            ref = model(**batch, output_attentions=True)
    except Exception as err:
        return Result(model_type, "skip", f"eager forward of the tiny model failed: {type(err).__name__}: "
                                          f"{_short(err)}")
    layers = m.adapter.attention_layers()
    eager = [a for a in (ref.attentions or ()) if a is not None]
    if len(eager) != len(layers):
        return Result(model_type, "fail", f"eager output_attentions gave {len(eager)} patterns for "
                                          f"{len(layers)} attention layers")
    z_in: dict[int, torch.Tensor] = {}

    def keep_input(layer):
        def hook(module, args, kwargs):
            z_in.setdefault(layer, (args[0] if args else next(iter(kwargs.values()))).detach())
        return hook

    hooks = [m.adapter.out_proj(L).register_forward_pre_hook(keep_input(L), with_kwargs=True) for L in layers]
    stats = _stats_probe()
    try:
        with interp.capture(m, patterns=True, z=True, probes=[stats] if stats else []) as rec:
            logits = model(**batch).logits
    except UnsupportedArchitectureError as err:
        return Result(model_type, "unsupported", _short(err, 300))
    except Exception as err:
        return Result(model_type, "fail", f"forward inside a capture raised {type(err).__name__}: {_short(err)}")
    finally:
        for h in hooks:
            h.remove()
    if not len(rec.patterns):
        return Result(model_type, "unsupported", "the model never called interp's AttentionInterface function "
                                                 "(its attention does not dispatch through ALL_ATTENTION_FUNCTIONS)")
    problems = []
    for i, L in enumerate(layers):
        got, want = rec.patterns[L], eager[i]
        if got.shape != want.shape:
            problems.append(f"(a) layer {L}: pattern shape {tuple(got.shape)} != eager {tuple(want.shape)}")
            continue
        rows = real[:, None, :, None].expand_as(got)
        if (g := _gap(got[rows], want[rows])) > 1e-5:
            problems.append(f"(a) layer {L}: patterns differ from eager by {g:.1e}")
        zl = rec.z[L].flatten(-2)
        if L not in z_in or z_in[L].shape != zl.shape:
            problems.append(f"(c) layer {L}: z {tuple(zl.shape)} is not the output projection's input "
                            f"{tuple(z_in[L].shape) if L in z_in else 'never called'}")
        elif (g := _gap(zl[real], z_in[L][real])) > 1e-5:
            problems.append(f"(c) layer {L}: z differs from the output projection's input by {g:.1e}")
        if stats is not None:
            problems += _check_stats(stats, L, want, real)
    if (g := _gap(logits[real], ref.logits[real])) > 1e-4:
        problems.insert(0, f"(b) logits with capture differ from eager by {g:.1e}")
    return Result(model_type, "fail" if problems else "pass", "; ".join(problems[:3]))


def _stats_probe():
    try:
        from interp.capture.stats import Stats
    except ImportError:  # the streaming statistics have not landed: check (d) is skipped
        return None
    return Stats(spans=[(0, 1)], with_columns=True)


def _check_stats(stats, layer: int, p: torch.Tensor, real: torch.Tensor) -> list[str]:
    rows, cols = stats.rows[layer], stats.columns[layer]
    ent, first, total = _stats_reference(p, real)
    sel = real[:, None, :].expand_as(ent)
    out = []
    for name, got, want in (("entropy", rows.entropy[sel], ent[sel]), ("span mass", rows.span_mass[..., 0][sel],
                            first[sel]), ("column totals", cols.total, total)):
        if (g := _gap(got, want)) > 1e-4:
            out.append(f"(d) layer {layer}: stats {name} differ by {g:.1e}")
    top2 = p.topk(min(2, p.shape[-1]), dim=-1).values
    clear = sel & (top2[..., 0] - top2[..., -1] > 1e-4)
    if not torch.equal(rows.argmax[clear], p.argmax(-1)[clear]):
        out.append(f"(d) layer {layer}: stats argmax differs")
    return out


def _short(err: BaseException, n: int = 160) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= n else text[: n - 1] + "…"
