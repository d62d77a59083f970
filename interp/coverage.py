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

from interp.errors import InterpError

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
    **dict.fromkeys(("moe_intermediate_size", "shared_expert_intermediate_size", "expert_intermediate_size"), 32),
    **dict.fromkeys(("num_experts", "n_routed_experts", "num_local_experts", "moe_num_experts"), 4),
    **dict.fromkeys(("num_experts_per_tok", "moe_topk", "top_k_experts"), 2),
    **dict.fromkeys(("n_group", "topk_group", "n_shared_experts", "first_k_dense_replace", "num_expert_group"), 1),
    "num_experts_per_token": 2,
    "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "kv_lora_rank": 16, "q_lora_rank": 32,
    "linear_key_head_dim": 16, "linear_value_head_dim": 16, "linear_num_key_heads": 2, "linear_num_value_heads": 4,
    "sliding_window": 4,  # shorter than the test batch, so windows really cut
    "rotary_dim": 8,
}
# fields whose default `None` means "derive it": the tiny value is set explicitly instead
_FILL_NONE = ("head_dim", "num_key_value_heads", "num_experts_per_tok", "n_routed_experts", "n_shared_experts")


def _n_heads(d: dict):
    return next((d[k] for k in ("num_attention_heads", "n_head", "num_heads", "n_heads") if k in d), None)


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
        if keep and isinstance(v, dict) and v and all(str(i).isdigit() for i in v):  # {layer index: ...}
            out[k] = {keep.index(int(i)): shrink(x) if isinstance(x, dict) else x
                      for i, x in v.items() if int(i) in keep}
        elif isinstance(v, dict) and ("model_type" in v or k.endswith("_config")):
            out[k] = shrink(v)
        elif k in _SIZES and (isinstance(v, int) and not isinstance(v, bool) or v is None and k in _FILL_NONE):
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
_MAMBA = dict(mamba_n_heads=8, mamba_d_head=16, mamba_d_state=16, mamba_chunk_size=16)
OVERRIDES: dict[str, dict] = {
    # mamba heads x head width must equal expand x hidden; the default has no attention layer at all
    "bamba": dict(_MAMBA, attn_layer_indices=[1]),
    "granitemoehybrid": dict(_MAMBA, layer_types=["mamba", "attention"]),
    "zamba2": dict(mamba_headdim=16, attention_hidden_size=128, attention_head_dim=32, num_query_groups=4,
                   mamba_d_state=16, chunk_size=16),
    "zaya": dict(num_experts_per_tok=1),  # the only value it supports
    "dory": dict(n_input_layers=1, n_recurrent_layers=1, n_output_layers=0),  # must add up to the depth
    "ernie4_5_moe": dict(moe_k=2, moe_num_shared_experts=1, moe_layer_end_index=1),
    "gemma3n_text": dict(num_kv_shared_layers=0, laurel_rank=8, hidden_size_per_layer_input=16),
    "hrm_text": dict(num_layers_per_stack=1, H_cycles=1, L_cycles=1, L_bp_cycles=[1]),
    "lfm2_moe": dict(num_dense_layers=1, layer_types=["conv", "full_attention"]),  # default: derived, broken
    "cohere_compass_text": dict(rope_parameters={k: {"rope_type": "default", "rope_theta": 1e4}
                                                 for k in ("full_attention", "sliding_attention")}),
    **dict.fromkeys(("qwen4_exp_text", "qwen4_exp"), dict(indexer_n_heads=2, indexer_kv_heads=1, indexer_head_dim=16,
                                                          indexer_budget=8, indexer_compress_ratio=2)),
}


# Why a type fails, where the measured difference alone does not say (checked by reading its modeling file).
KNOWN: dict[str, str] = {
    "diffllama": "differential attention: each layer calls the attention function twice (two softmax maps whose "
                 "weighted difference is the layer's attention), so a recording holds both calls",
    "jetmoe": "mixture-of-attention heads: the output projection is an expert layer fed token by expert, not "
              "[batch, query, head x d_head]",
    "longcat_flash": "two attention sublayers per block (self_attn.0, self_attn.1); an adapter has one attention "
                     "module per block",
}


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
    d = shrink(cls().to_dict())
    for k, v in OVERRIDES.get(model_type, {}).items():
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
    pad = getattr(model.config.get_text_config(decoder=True), "pad_token_id", None)
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
    layers = m.adapter.attention_layers()
    eager: dict[int, torch.Tensor] = {}  # layer -> the weights its attention module returned (eager)
    hooks = [m.adapter.attention(L).register_forward_hook(_keep_weights(eager, L)) for L in layers]
    try:
        with torch.no_grad():
            ref = model(**batch, output_attentions=True)
    except Exception as err:
        return Result(model_type, "skip", f"eager forward of the tiny model failed: {type(err).__name__}: "
                                          f"{_short(err)}")
    finally:
        for h in hooks:
            h.remove()
    unseen = _unaddressed_attention(m.adapter)
    if unseen:
        return Result(model_type, "fail", f"{KNOWN.get(model_type, 'unaddressed attention')}: "
                                          f"{', '.join(unseen[:3])} not in the adapter")
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
    for L in layers:
        got, want = rec.patterns[L], eager.get(L)
        if want is None:
            problems.append(f"(a) layer {L}: eager attention returned no weights to compare with")
            continue
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
            problems.append(f"(c) layer {L}: z differs from the output projection's input by {g:.1e}"
                            f"{_between(m.adapter, L)}")
        if stats is not None:
            problems += _check_stats(stats, L, want, real)
    if (g := _gap(logits[real], ref.logits[real])) > 1e-4:
        problems.insert(0, f"(b) logits with capture differ from eager by {g:.1e}")
    if problems and model_type in KNOWN:
        problems.insert(0, KNOWN[model_type])
    return Result(model_type, "fail" if problems else "pass", "; ".join(problems[:3]))


def _keep_weights(store: dict, layer: int):
    def hook(module, args, output):
        w = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if torch.is_tensor(w) and w.dim() == 4:
            store.setdefault(layer, w.detach())

    return hook


def _unaddressed_attention(adapter) -> list[str]:
    """Self-attention modules inside the blocks that the adapter's (stack, layer) map does not know."""
    from interp.models.infer import calls_interface

    known = set(adapter.attention_sites())
    out = []
    for i, block in enumerate(adapter.blocks()):
        for name, mod in block.named_modules():
            if mod in known or not calls_interface(type(mod)) or "cross" in name or "encoder_attn" in name:
                continue
            if not any(k in known for k in mod.modules()) and not _inside_known(block, name, known):
                out.append(f"block {i}: {name}")
    return out


def _inside_known(block, name: str, known: set) -> bool:
    parts = name.split(".")
    return any(block.get_submodule(".".join(parts[:j])) in known for j in range(1, len(parts)))


def _between(adapter, layer: int) -> str:
    line = adapter.stacks[adapter.main_stack].z_transform
    return f" (the attention module transforms z before it: `{line}`)" if line else ""


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


class _TimeLimit(Exception):
    pass


def _alarm(signum, frame):
    raise _TimeLimit()


def run_one(model_type: str, time_limit: float = 60.0) -> Result:
    """`check(model_type)` in this process, cut off after `time_limit` seconds, never raising."""
    import signal
    import time
    import warnings

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    start = time.perf_counter()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, time_limit)
    try:
        result = check(model_type)
    except _TimeLimit:
        result = Result(model_type, "fail", f"time limit: the checks took over {time_limit:.0f} s")
    except Exception as err:  # a crash of the coverage tool itself, reported rather than fatal
        result = Result(model_type, "fail", f"coverage check crashed: {type(err).__name__}: {_short(err)}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    result.seconds = time.perf_counter() - start
    return result


def sweep(model_types: list[str] | None = None, *, jobs: int = 2, time_limit: float = 60.0,
          progress: bool = True) -> list[Result]:
    """Check `model_types` (default: every causal-LM type) in `jobs` worker processes."""
    import multiprocessing as mp
    from functools import partial

    from rich.progress import Progress

    import interp  # noqa: F401  (imported once here, inherited by the forked workers)

    types = list(model_types or causal_lm_types())
    unknown = [t for t in types if t not in causal_lm_types()]
    if unknown:
        raise InterpError(f"not causal-LM model types of transformers here: {', '.join(unknown)}. Choose from "
                          f"interp.coverage.causal_lm_types() (e.g. llama, gpt2, qwen3_next).")
    results = []
    with Progress(disable=not progress, transient=True) as bar, \
            mp.get_context("fork").Pool(jobs, maxtasksperchild=16) as pool:
        task = bar.add_task("coverage sweep", total=len(types))
        for result in pool.imap_unordered(partial(run_one, time_limit=time_limit), types):
            results.append(result)
            bar.update(task, advance=1, description=f"coverage: {result.model_type} {result.status}")
    return sorted(results, key=lambda r: r.model_type)


def tl_count() -> tuple[int, int, str]:
    """(causal-LM types TransformerLens's bridge supports, its architecture adapters, its version)."""
    try:
        from importlib.metadata import version

        from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES
    except ImportError:
        return 0, 0, "not installed"
    classes = set(SUPPORTED_ARCHITECTURES)
    covered = sum(cls in classes for cls in causal_lm_types().values())
    return covered, len(classes), version("transformer-lens")


def table(results: list[Result]) -> str:
    """The coverage report in Markdown: counts, TransformerLens beside it, one row per model type."""
    import datetime

    import transformers

    types = causal_lm_types()
    by_status = {s: sum(r.status == s for r in results) for s in ("pass", "fail", "unsupported", "skip")}
    is_routed = {r.model_type: routed(r.model_type) for r in results}
    n_routed = sum(is_routed.values())
    routed_pass = sum(r.status == "pass" and is_routed[r.model_type] for r in results)
    tl, tl_adapters, tl_version = tl_count()
    lines = [
        "# Architecture coverage",
        "",
        f"Generated by `python -m interp.coverage` on {datetime.date.today()} with transformers "
        f"{transformers.__version__} (CPU, fp32, tiny random configs: {LAYERS} layers, width {HIDDEN}).",
        "",
        f"- causal-LM model types checked: **{len(results)}** of {len(types)} "
        f"(`MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`)",
        f"- routed through `AttentionInterface` (modeling file uses `ALL_ATTENTION_FUNCTIONS`): **{n_routed}**",
        f"- pass all checks: **{by_status['pass']}** — {routed_pass} of the {n_routed} routed types "
        f"(**{100 * routed_pass / max(n_routed, 1):.0f}%**)",
        f"- fail: {by_status['fail']}, unsupported (refused, with reason): {by_status['unsupported']}, "
        f"skip (no tiny model here): {by_status['skip']}",
        f"- TransformerLens {tl_version}, same day, same transformers: its bridge has {tl_adapters} architecture "
        f"classes, covering **{tl}** of these {len(types)} causal-LM types",
        "",
        "## What this is",
        "",
        "`interp` captures attention inside transformers' `AttentionInterface`, so a model type needs no code "
        "of its own: `interp.models.infer` reads the blocks, the attention module (the one whose `forward` "
        "calls the interface), its output projection (`z` is its input) and the MLP off the module tree, and "
        "head counts off the attention module and the text config. The hand-written `FAMILIES` in "
        "`interp.models.adapters` are kept where they exist (and serve as the reference the inference is "
        "tested against). Hybrid models (Mamba / linear-attention layers) list the blocks that have attention; "
        "multimodal models adapt their text tower; MoE blocks are the MLP; sliding windows and soft-capping are "
        "exact (the tiny configs use a window of 4 on 9-token prompts). Refused with a reason: attention "
        "outside the interface (Falcon, Bloom, MPT, GPT-Neo, Mamba, RWKV ...) and learned sinks in the "
        "weights (gpt-oss and kin), which the attention function does not apply yet.",
        "",
        "Checks on a left-padded batch of 3 prompts (real rows only): (a) captured patterns == eager "
        "`output_attentions` of the same module (1e-5); (b) logits in a capture == eager logits (1e-4); (c) "
        "captured `z` == the input of the adapter's output projection (1e-5); (d) streaming `Stats` entropy / "
        "span mass / column totals (1e-4) and argmax == from the eager patterns. `routed`: the causal-LM class's "
        "modeling file uses `ALL_ATTENTION_FUNCTIONS`. `skip`: no tiny model could be built here (the reason "
        "is transformers' own error) — these count as not passing.",
        "",
        "Commands: `python -m interp.coverage` (this file, all types, 2 workers, 60 s per type); "
        "`python -m interp.coverage llama gemma2` (a few, to stdout); `pytest tests/test_coverage.py` (the "
        "sweep, failing with the model type named when a type that passes here stops passing).",
        "",
        "| model type | class | routed | status | seconds | reason |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(results, key=lambda r: r.model_type):
        reason = r.reason.replace("|", "\\|")
        lines.append(f"| {r.model_type} | {types.get(r.model_type, '?')} | {'yes' if is_routed[r.model_type] else 'no'}"
                     f" | {r.status} | {r.seconds:.1f} | {reason} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import sys
    import time
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m interp.coverage", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("types", nargs="*", help="model types to check (default: every causal-LM type)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per model type (default 60)")
    parser.add_argument("--out", help="write the Markdown table here (default: docs/coverage.md for a full "
                                      "sweep, stdout for a few types)")
    parser.add_argument("--json", help="also write the results as JSON here")
    parser.add_argument("--from-json", help="re-render the table from a JSON file written by --json (no sweep)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.from_json:
        results = [Result(**r) for r in json.loads(Path(args.from_json).read_text())]
        args.types = [] if len(results) == len(causal_lm_types()) else [r.model_type for r in results]
    else:
        try:
            results = sweep(args.types or None, jobs=args.jobs, time_limit=args.time_limit,
                            progress=sys.stderr.isatty())
        except InterpError as err:
            print(f"interp.coverage: error: {err}", file=sys.stderr)
            return 2
    text = table(results)
    out = args.out or (None if args.types else str(Path(__file__).resolve().parents[1] / "docs" / "coverage.md"))
    if out:
        Path(out).write_text(text)
    else:
        print(text)
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in results], indent=1))
    print(f"{sum(r.status == 'pass' for r in results)}/{len(results)} pass in {time.perf_counter() - start:.0f} s"
          + (f"; table: {out}" if out else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
