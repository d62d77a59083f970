"""Audio in for speech models: read WAV files, resample to 16 kHz mono, check or chunk 30 s windows.

Whisper sees exactly 30 s of log-mel features (3000 frames, 1500 encoder positions); shorter audio
is padded with silence by the feature extractor, longer audio must be cut into windows first.

Example:
    >>> wave = load_wav("data/speech/meeting.wav")       # 22.05 kHz file -> 16 kHz float32
    >>> wave.dtype, round(len(wave) / 16_000, 1)
    (dtype('float32'), 4.3)
"""

from __future__ import annotations

from math import gcd
from pathlib import Path

import numpy as np
from jaxtyping import Float

from interp.errors import InterpError

SAMPLE_RATE = 16_000
MAX_SECONDS = 30.0


class AudioError(InterpError, ValueError):
    """Audio that a speech model cannot take as given (wrong rate, too long, empty, unreadable)."""


def resample(
    wave: Float[np.ndarray, " sample"], rate: int, target: int = SAMPLE_RATE
) -> Float[np.ndarray, " sample"]:
    """Polyphase resampling (anti-aliased) from `rate` to `target` Hz."""
    from scipy.signal import resample_poly

    if rate == target:
        return wave.astype(np.float32, copy=False)
    g = gcd(rate, target)
    return resample_poly(wave, target // g, rate // g).astype(np.float32)


def load_wav(
    path: str | Path, *, rate: int = SAMPLE_RATE, resample_to_rate: bool = True
) -> Float[np.ndarray, " sample"]:
    """Mono float32 waveform in [-1, 1] at `rate` Hz from a PCM/float WAV file.

    A file at another rate is resampled (set `resample_to_rate=False` to get an `AudioError`
    instead); stereo is averaged to mono.
    """
    from scipy.io import wavfile

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"No audio file at {path}: give the path to a .wav file.")
    try:
        file_rate, data = wavfile.read(path)
    except ValueError as err:
        raise AudioError(
            f"{path} is not a readable WAV file ({err}); convert it with e.g. "
            f"`ffmpeg -i in -ar 16000 -ac 1 out.wav`."
        ) from err
    if np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    data = data.astype(np.float32)
    if data.ndim == 2:
        data = data.mean(axis=1)
    if data.size == 0:
        raise AudioError(f"{path} holds no samples.")
    if file_rate != rate:
        if not resample_to_rate:
            raise AudioError(
                f"{path} is sampled at {file_rate} Hz but the model needs {rate} Hz; resample it "
                f"(load_wav(..., resample_to_rate=True) does) or `ffmpeg -ar {rate}`."
            )
        data = resample(data, file_rate, rate)
    return data


def check_waveform(
    wave: Float[np.ndarray, " sample"], *, rate: int = SAMPLE_RATE, max_seconds: float = MAX_SECONDS
) -> Float[np.ndarray, " sample"]:
    """Return a 1-D float32 waveform, or raise `AudioError` for empty / multi-channel / too long audio."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise AudioError(
            f"Expected a mono waveform of shape [sample], got shape {wave.shape}; average channels."
        )
    if wave.size == 0:
        raise AudioError("The waveform is empty; give at least a few hundred milliseconds of audio.")
    seconds = wave.size / rate
    if seconds > max_seconds:
        raise AudioError(
            f"The audio lasts {seconds:.1f} s but the model takes at most {max_seconds:.0f} s; "
            f"split it with chunk_waveform(wave) and analyse each window."
        )
    return wave


def chunk_waveform(
    wave: Float[np.ndarray, " sample"], *, rate: int = SAMPLE_RATE, seconds: float = MAX_SECONDS
) -> list[Float[np.ndarray, " sample"]]:
    """Consecutive windows of at most `seconds` (the last one shorter)."""
    step = int(seconds * rate)
    return [wave[i : i + step] for i in range(0, len(wave), step)]


def normalize_text(text: str) -> list[str]:
    """Lower-cased words without punctuation (the usual light normalisation before WER)."""
    import re

    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, after `normalize_text`.

    >>> word_error_rate("The cat sat.", "the cat sat on")
    0.3333333333333333
    """
    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref:
        raise AudioError("The reference transcript has no words; WER is undefined.")
    row = list(range(len(hyp) + 1))  # edit distance, one row at a time
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / len(ref)


__all__ = [
    "MAX_SECONDS",
    "SAMPLE_RATE",
    "AudioError",
    "check_waveform",
    "chunk_waveform",
    "load_wav",
    "normalize_text",
    "resample",
    "word_error_rate",
]
