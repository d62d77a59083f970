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
    assert (found.stack.blocks, found.stack.attn, found.stack.out_proj) == (want.blocks, want.attn, want.out_proj)
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


def test_refuses_attention_outside_the_interface():
    with pytest.raises(UnsupportedArchitectureError, match="AttentionInterface"):
        adapter_for(tiny_model("falcon"))


def test_load_accepts_an_inferable_directory_and_refuses_falcon(tmp_path):
    import interp
    from interp.models.load import _check_family

    tiny_model("qwen3_moe").save_pretrained(tmp_path / "moe")
    _check_family(str(tmp_path / "moe"))  # no declarative family, inferable: accepted
    tiny_model("falcon").save_pretrained(tmp_path / "falcon")
    with pytest.raises(UnsupportedArchitectureError, match="falcon"):
        _check_family(str(tmp_path / "falcon"))
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
