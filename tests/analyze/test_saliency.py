"""Saliency: our batched runs equal direct per-token captum calls; attention rows sum to 1; bad input."""


import numpy as np
import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients, Occlusion
from transformers import LlamaConfig, LlamaForCausalLM, WhisperConfig, WhisperForConditionalGeneration

from interp.analyze.saliency import (
    SaliencyConfig,
    attribute,
    explain_speech,
    explain_text,
    real_frames,
    speech_target,
    text_target,
)
from interp.errors import InterpError
from interp.resources import data_path
from interp.tasks.speech import AudioError


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def whisper():
    torch.manual_seed(0)
    cfg = WhisperConfig(
        vocab_size=60,
        num_mel_bins=8,
        d_model=16,
        encoder_layers=1,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_source_positions=20,
        max_target_positions=16,
        decoder_start_token_id=1,
        pad_token_id=0,
        eos_token_id=2,
    )
    return WhisperForConditionalGeneration(cfg).eval()


def _direct_text(hf, ids, p, t):
    """One token's score as a function of the prompt embeddings, written without interp."""
    tail = hf.get_input_embeddings()(ids[:, p:]).detach()

    def f(x):
        logits = hf(inputs_embeds=torch.cat([x, tail.expand(len(x), -1, -1)], 1)).logits
        return logits[:, p - 1 + t].log_softmax(-1)[:, ids[0, p + t]]

    return f, hf.get_input_embeddings()(ids[:, :p]).detach()


@pytest.mark.fast
@pytest.mark.parametrize("method", ["input_x_gradient", "integrated_gradients", "occlusion"])
def test_text_saliency_equals_direct_captum(llama, method):
    ids, p = torch.tensor([[5, 9, 3, 17, 33, 8, 41, 12]]), 5
    cfg = SaliencyConfig(method=method, n_steps=8, internal_batch_size=2)
    ours = attribute(text_target(llama, ids, p), cfg)
    assert ours.shape == (3, p, 32)
    for t in range(3):
        f, x = _direct_text(llama, ids, p, t)
        if method == "input_x_gradient":
            ref = InputXGradient(f).attribute(x.clone())
        elif method == "integrated_gradients":
            ref = IntegratedGradients(f).attribute(x.clone(), n_steps=8, baselines=0.0)
        else:
            ref = Occlusion(f).attribute(x, sliding_window_shapes=(1, 32), strides=(1, 32), baselines=0.0)
        torch.testing.assert_close(ours[t], ref[0], rtol=1e-4, atol=1e-5)


@pytest.mark.fast
def test_speech_occlusion_patches_equal_direct_captum(whisper):
    torch.manual_seed(1)
    feats = torch.randn(1, 8, 40)
    tokens, prefix, n = torch.tensor([7, 11, 3]), torch.tensor([1, 4]), 14
    target = speech_target(whisper, feats, tokens, prefix, n)
    ours = attribute(target, SaliencyConfig(method="occlusion", window=(4, 2), internal_batch_size=3))
    assert ours.shape == (3, 8, n) and target.reduce(ours).shape == (3, n // 2)
    dec = torch.tensor([[1, 4, 7, 11]])
    for t in range(3):

        def f(x, t=t):
            full = torch.cat([x, feats[:, :, n:].expand(len(x), -1, -1)], -1)
            logits = whisper(input_features=full, decoder_input_ids=dec.expand(len(x), -1)).logits
            return logits[:, 1 + t].log_softmax(-1)[:, tokens[t]]

        ref = Occlusion(f).attribute(
            feats[:, :, :n], sliding_window_shapes=(4, 2), strides=(4, 2), baselines=0.0
        )
        torch.testing.assert_close(ours[t], ref[0], rtol=1e-4, atol=1e-5)


@pytest.mark.fast
def test_real_frames_round_to_encoder_positions():
    assert real_frames(16_000) == 100 and real_frames(16_161) == 102 and real_frames(10**7) == 3000


@pytest.mark.fast
def test_bad_methods_and_scores(llama, whisper):
    target = text_target(llama, torch.tensor([[1, 2, 3, 4]]), 3)
    with pytest.raises(InterpError, match="Unknown saliency method 'lime'.*input_x_gradient"):
        attribute(target, SaliencyConfig(method="lime"))
    with pytest.raises(InterpError, match="Unknown saliency score"):
        text_target(llama, torch.tensor([[1, 2, 3, 4]]), 3, score="energy").forward(target.inputs)
    with pytest.raises(InterpError, match="window"):
        attribute(
            speech_target(whisper, torch.zeros(1, 8, 40), torch.tensor([3]), torch.tensor([1]), 4),
            SaliencyConfig(method="occlusion", window=(9, 2)),
        )


@pytest.mark.fast
def test_empty_prompt_and_bad_audio_are_refused(llama, whisper):
    with pytest.raises(InterpError, match="prompt is empty"):
        explain_text(llama, "   ")
    with pytest.raises(AudioError, match="at most 30 s.*chunk_waveform"):
        explain_speech(whisper, np.zeros(31 * 16_000, np.float32), feature_extractor=object())
    with pytest.raises(InterpError, match="feature extractor"):
        explain_speech(whisper, np.zeros(16_000, np.float32))


def _eager(model):
    """The same weights with transformers' eager attention (the independent reference)."""
    clone = type(model)(model.config).eval()
    clone.load_state_dict(model.state_dict())
    clone.set_attn_implementation("eager")
    return clone


@pytest.mark.fast
def test_text_attention_rows_sum_to_one_and_match_eager(llama):
    r = explain_text(llama, [5, 9, 3, 17, 33], max_new_tokens=4, config=SaliencyConfig(internal_batch_size=4))
    steps, p = len(r.tokens), len(r.inputs)
    assert r.attention.shape == (2, 4, steps, p) and r.saliency.shape == (steps, p)
    torch.testing.assert_close(r.attention.sum(-1), torch.ones(2, 4, steps))
    ids = torch.tensor([[5, 9, 3, 17, 33] + r.token_ids])
    eager = torch.stack(_eager(llama)(ids, output_attentions=True).attentions)[:, 0, :, p - 1 : -1]
    torch.testing.assert_close(r.input_mass, eager[..., :p].sum(-1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        r.attention, eager[..., :p] / eager[..., :p].sum(-1, keepdim=True), rtol=1e-4, atol=1e-5
    )


class _Features:
    """A stand-in feature extractor: fixed random log-mels for the tiny Whisper (20 positions, 40 frames)."""

    def __call__(self, wave, sampling_rate, return_tensors):
        from types import SimpleNamespace

        return SimpleNamespace(
            input_features=torch.randn(1, 8, 40, generator=torch.Generator().manual_seed(2))
        )


@pytest.mark.fast
def test_cross_attention_rows_cut_to_real_frames_match_eager(whisper):
    for key, value in {
        "decoder_start_token_id": 1,
        "no_timestamps_token_id": 4,
        "eos_token_id": 2,
        "suppress_tokens": [0, 1, 2, 4],
        "begin_suppress_tokens": None,
        "max_length": 16,
    }.items():
        setattr(whisper.generation_config, key, value)
    wave = np.zeros(160 * 13, np.float32)  # 13 frames -> 14 -> 7 encoder positions
    r = explain_speech(
        whisper,
        wave,
        tokenizer=_Tok(),
        feature_extractor=_Features(),
        max_new_tokens=3,
        config=SaliencyConfig(method="integrated_gradients", n_steps=4),
    )
    steps = len(r.tokens)
    assert r.attention.shape == (2, 2, steps, 7) and r.saliency.shape == (steps, 7)
    torch.testing.assert_close(r.attention.sum(-1), torch.ones(2, 2, steps))
    dec = torch.tensor([[1, 4] + r.token_ids[:-1]])
    out = _eager(whisper)(
        input_features=_Features()(None, 0, 0).input_features, decoder_input_ids=dec, output_attentions=True
    )
    cross = torch.stack(out.cross_attentions)[:, 0, :, 1:, :7]
    torch.testing.assert_close(r.attention, cross / cross.sum(-1, keepdim=True), rtol=1e-4, atol=1e-5)
    at_8k = explain_speech(
        whisper,
        np.zeros(80 * 13, np.float32),
        rate=8_000,
        tokenizer=_Tok(),
        feature_extractor=_Features(),
        max_new_tokens=1,
    )  # resampled to 13 frames
    assert at_8k.saliency.shape == (1, 7)


class _Tok:
    def convert_ids_to_tokens(self, ids):
        return [f"t{i}" for i in ids]


# ----------------------------------------------------------------------------- real models (slow)

SPEECH = data_path("speech")


@pytest.mark.slow
def test_whisper_cross_attention_vs_saliency_end_to_end():
    from interp.models.adapters import adapter_for
    from interp.models.model import Model
    from interp.models.whisper_ct2 import load_whisper_tiny_en
    from interp.tasks.speech import load_wav

    hf, tok, fx = load_whisper_tiny_en()
    m = Model(hf, tok, adapter_for(hf), "whisper-tiny.en", extras={"feature_extractor": fx})
    wave = load_wav(SPEECH / "meeting.wav")
    r = explain_speech(m, wave, max_new_tokens=3)
    assert [t.strip("Ġ") for t in r.tokens] == ["Please", "schedule", "the"]
    n_pos = real_frames(len(wave)) // 2
    assert r.attention.shape == (4, 6, 3, n_pos) and r.saliency.shape == (3, n_pos)
    torch.testing.assert_close(r.attention.sum(-1), torch.ones(4, 6, 3))
    assert r.head_sets["alignment"][0] == (1, 0) and len(r.head_sets["alignment"]) == 8
    table = r.table()
    assert -1 <= table["heads alignment"].pearson.mean <= 1 and table["all_heads"].pearson.n == 3


@pytest.mark.slow
def test_cli_on_smollm2_writes_table_and_figures(smollm2, tmp_path):
    import argparse
    import json

    from interp.cli.saliency import add_arguments, explain

    parser = add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        [
            "smollm2",
            "--input",
            "The chemical symbol for gold is",
            "--max-new-tokens",
            "2",
            "--out",
            str(tmp_path),
        ]
    )
    doc = explain(args, model=smollm2)
    assert doc["n_tokens"] == 2 and len(doc["pearson_by_head"]) == 30 and len(doc["pearson_by_head"][0]) == 9
    assert {"all_heads", "layer 0", "layer 29"} <= set(doc["agreement"])
    assert json.loads((tmp_path / "agreement.json").read_text())["method"] == "input_x_gradient"
    assert (tmp_path / "heads.html").stat().st_size > 1000 and (tmp_path / "token.html").exists()
    with pytest.raises(InterpError, match="is audio but"):
        explain(
            parser.parse_args(["smollm2", "--input", str(SPEECH / "meeting.wav"), "--out", str(tmp_path)]),
            model=smollm2,
        )
    with pytest.raises(SystemExit):
        parser.parse_args(["smollm2", "--input", "x", "--method", "lime"])
