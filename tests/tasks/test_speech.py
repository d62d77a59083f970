"""Audio loading: resampling against an analytic sine, clear errors for wrong rate / empty / too long."""

import numpy as np
import pytest
from scipy.io import wavfile

from interp.tasks.speech import AudioError, check_waveform, chunk_waveform, load_wav, word_error_rate

pytestmark = pytest.mark.fast


def _sine(rate, seconds=0.5, hz=440.0):
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_wrong_sample_rate_is_resampled_or_refused(tmp_path):
    path = tmp_path / "a.wav"
    wavfile.write(path, 22_050, (_sine(22_050) * 32767).astype(np.int16))
    wave = load_wav(path)
    expect = _sine(16_000)
    assert len(wave) == len(expect)
    inner = slice(200, -200)  # the polyphase filter's edges ring
    assert np.abs(wave[inner] - expect[inner]).max() < 0.01
    with pytest.raises(AudioError, match="22050 Hz but the model needs 16000 Hz"):
        load_wav(path, resample_to_rate=False)


def test_stereo_is_averaged_and_empty_or_missing_files_refused(tmp_path):
    wavfile.write(tmp_path / "s.wav", 16_000, np.stack([_sine(16_000), -_sine(16_000)], 1))
    assert np.abs(load_wav(tmp_path / "s.wav")).max() < 1e-6
    wavfile.write(tmp_path / "e.wav", 16_000, np.zeros(0, np.int16))
    with pytest.raises(AudioError, match="no samples"):
        load_wav(tmp_path / "e.wav")
    with pytest.raises(AudioError, match="No audio file"):
        load_wav(tmp_path / "missing.wav")
    (tmp_path / "bad.wav").write_bytes(b"not a wav")
    with pytest.raises(AudioError, match="not a readable WAV"):
        load_wav(tmp_path / "bad.wav")


def test_long_audio_is_refused_with_the_fix_and_can_be_chunked():
    wave = np.zeros(16_000 * 65, np.float32)
    with pytest.raises(AudioError, match="65.0 s .* at most 30 s.*chunk_waveform"):
        check_waveform(wave)
    assert [len(c) / 16_000 for c in chunk_waveform(wave)] == [30.0, 30.0, 5.0]
    with pytest.raises(AudioError, match="empty"):
        check_waveform(np.zeros(0))
    with pytest.raises(AudioError, match="mono"):
        check_waveform(np.zeros((2, 100)))


def test_word_error_rate_counts_edits():
    assert word_error_rate("a b c d", "a x c d e") == pytest.approx(2 / 4)  # 1 substitution, 1 insertion
    assert word_error_rate("Hello, world!", "hello world") == 0.0
    assert word_error_rate("one two three", "three") == pytest.approx(2 / 3)
