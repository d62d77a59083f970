"""Automatic adapters: inferred paths agree with the hand-written families, refusals are clear."""

import pytest
import torch

from interp.coverage import tiny_model
from interp.errors import UnsupportedArchitectureError
from interp.models.adapters import FAMILIES, Adapter, adapter_for
from interp.models.infer import infer_stack

pytestmark = pytest.mark.fast


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "gemma2", "qwen3"])
def test_inference_agrees_with_declarative_family(family):
    """The hand-written `FAMILIES` entries are the independent reference for the inferred paths."""
    model = tiny_model(family)
    found = infer_stack(model)
    want = FAMILIES[family].stacks["decoder"]
    got = found.stack
    assert (got.blocks, got.attn, got.out_proj) == (want.blocks, want.attn, want.out_proj)
    a = adapter_for(model)
    assert (found.n_heads, found.n_kv_heads, found.head_dim, found.d_model) == (
        a.n_heads, a.n_kv_heads, a.head_dim, a.d_model)


def test_bert_output_projection_lives_beside_the_attention():
    a = adapter_for(tiny_model("bert"))
    layer = a.blocks()[1]
    assert a.attention(1) is layer.attention.self
    assert a.out_proj(1) is layer.attention.output.dense  # in the block, not inside `attention.self`


def test_hybrid_model_lists_only_its_attention_blocks():
    model = tiny_model("qwen3_next")  # one linear-attention block, one full-attention block
    a = adapter_for(model)
    kinds = model.config.layer_types
    assert a.attention_layers() == [i for i, k in enumerate(kinds) if k == "full_attention"]
    linear = next(i for i, k in enumerate(kinds) if k != "full_attention")
    with pytest.raises(UnsupportedArchitectureError, match="hybrid"):
        a.attention(linear)
    assert set(a.attention_sites().values()) == {("decoder", i) for i in a.attention_layers()}


def test_multimodal_model_adapts_its_text_tower():
    model = tiny_model("gemma3")
    a = adapter_for(model)
    text = model.config.get_text_config(decoder=True)
    assert a.n_layers() == text.num_hidden_layers
    assert "language_model" in a.stacks["decoder"].blocks
    assert a.n_heads == text.num_attention_heads and a.head_dim == text.head_dim


def test_mla_head_dim_is_the_value_width():
    """DeepSeek MLA: query/key heads are wider than value heads; `z` has the value width."""
    model = tiny_model("deepseek_v3")
    a = adapter_for(model)
    assert a.head_dim == model.config.v_head_dim
    assert a.out_proj(0).in_features == a.n_heads * a.head_dim


def test_declared_family_missing_a_stack_falls_back():
    a = adapter_for(tiny_model("whisper"))  # WhisperForCausalLM: Whisper's decoder alone
    assert a.main_stack == "decoder" and "encoder" not in a.stacks and a.n_layers() == 2


def test_learned_sinks_are_captured_exactly():
    """gpt-oss adds a per-head sink column to the softmax: patterns, logits, z and Stats match eager."""
    from interp.coverage.checks import check

    result = check("gpt_oss")
    assert result.status == "pass", result.reason


@pytest.fixture(scope="module")
def unrouted() -> list[str]:
    """Causal-LM types of the *installed* transformers whose modeling file never calls the interface.

    Which types these are changes between transformers releases (Falcon moved onto the interface in
    5.25), so the refusal tests draw them from the installed library instead of naming one.
    """
    from interp.coverage.sweep import causal_lm_types, routed

    return [t for t in sorted(causal_lm_types()) if not routed(t)]


def _refusals(types: list[str], want: int = 2) -> list[tuple[str, str]]:
    """The first `want` of `types` that build and that `adapter_for` refuses, with the refusal message.

    A type that builds and is accepted must really be captured exactly (a multimodal wrapper whose
    text tower calls the interface, say): the coverage check proves it, or the test fails.
    """
    from interp.coverage.checks import check

    found = []
    for model_type in types:
        try:
            model = tiny_model(model_type)
        except Exception:  # transformers cannot build this type from a tiny config here
            continue
        try:
            adapter_for(model)
        except UnsupportedArchitectureError as err:
            found.append((model_type, str(err)))
            if len(found) == want:
                break
        else:
            result = check(model_type)
            assert result.status == "pass", f"{model_type} accepted but not captured exactly: {result.reason}"
    return found


def test_refuses_attention_outside_the_interface(unrouted):
    refused = _refusals(unrouted)
    assert refused, f"no buildable type outside the interface among {unrouted}"
    for model_type, message in refused:
        assert "AttentionInterface" in message and model_type in message


def test_load_accepts_an_inferable_directory_and_refuses_an_unrouted_one(tmp_path, unrouted):
    import interp
    from interp.models.load import _check_family

    tiny_model("qwen3_moe").save_pretrained(tmp_path / "moe")
    _check_family(str(tmp_path / "moe"))  # no declarative family, inferable: accepted
    (model_type, _), = _refusals(unrouted, want=1)
    tiny_model(model_type).save_pretrained(tmp_path / model_type)
    with pytest.raises(UnsupportedArchitectureError, match=model_type):
        _check_family(str(tmp_path / model_type))
    assert isinstance(interp.models.adapters.adapter_for(tiny_model("qwen3_moe")), Adapter)


def test_inferred_adapter_captures_exact_patterns():
    """End to end on an undeclared MoE type: captured patterns equal eager `output_attentions`."""
    import interp
    from interp.coverage import padded_batch

    model = tiny_model("olmoe")
    assert model.config.model_type not in FAMILIES
    batch = padded_batch(model)
    with torch.no_grad():
        eager = model(**batch, output_attentions=True).attentions
    with interp.capture(model, patterns=True) as rec:
        model(**batch)
    real = batch["attention_mask"].bool()[:, None, :, None].expand_as(eager[1])
    torch.testing.assert_close(rec.patterns[1][real], eager[1][real], atol=1e-5, rtol=0)
