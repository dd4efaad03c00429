"""Tests for lipsync_jax.media.audio: the mel against an independent NumPy reference, framing, errors."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import soundfile

from lipsync_jax.media import audio

SR = 16000


def _speechy(seconds: float, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * SR)) / SR
  f0 = 120 + 30 * np.sin(2 * np.pi * 1.3 * t)
  phase = 2 * np.pi * np.cumsum(f0) / SR
  wav = sum(np.sin(k * phase) / k for k in range(1, 20)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
  wav += 0.05 * rng.standard_normal(t.size)
  return (0.3 * wav / np.max(np.abs(wav))).astype(np.float32)


def reference_mel(wav: np.ndarray, pad_mode: str = "reflect") -> np.ndarray:
  """Spec section 5 written independently: explicit pre-emphasis loop, framing and numpy rfft."""
  x = wav.astype(np.float64)
  y = np.empty_like(x)
  y[0] = x[0]
  y[1:] = x[1:] - 0.97 * x[:-1]
  n_fft, hop = 800, 200
  padded = np.pad(y, n_fft // 2, mode=pad_mode)
  num_frames = 1 + (padded.size - n_fft) // hop
  window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
  frames = np.stack([padded[i * hop : i * hop + n_fft] * window for i in range(num_frames)], axis=1)
  magnitude = np.abs(np.fft.rfft(frames, axis=0))
  basis = librosa.filters.mel(sr=SR, n_fft=n_fft, n_mels=80, fmin=55, fmax=7600)  # only the filterbank
  mel = basis.astype(np.float64) @ magnitude
  db = 20 * np.log10(np.maximum(1e-5, mel)) - 20
  return np.clip(8 * (db + 100) / 100 - 4, -4, 4)


def test_mel_matches_numpy_reference():
  wav = _speechy(1.3)
  mel = audio.melspectrogram(wav)
  ref = reference_mel(wav)
  assert mel.dtype == np.float32
  assert mel.shape == ref.shape == (80, 1 + wav.size // 200)
  np.testing.assert_allclose(mel, ref, atol=1e-4, rtol=0)
  assert mel.min() >= -4 and mel.max() <= 4 and mel.std() > 0.5  # a real, non-degenerate spectrogram


def test_mel_rate_is_80_steps_per_second():
  for seconds in (1.0, 2.0, 3.5):
    wav = _speechy(seconds)
    assert audio.melspectrogram(wav).shape[1] == int(80 * seconds) + 1
    assert audio.num_mel_steps(wav.size) == int(80 * seconds) + 1


def test_reflect_padding_differs_from_constant_at_the_edges():
  wav = _speechy(1.0)
  mel = audio.melspectrogram(wav)
  constant = reference_mel(wav, pad_mode="constant")
  edge_diff = np.abs(mel[:, :2] - constant[:, :2]).max()
  middle_diff = np.abs(mel[:, 5:-5] - constant[:, 5:-5]).max()
  assert edge_diff > 0.05  # the pad mode matters in the first/last frames ...
  assert middle_diff < 1e-4  # ... and nowhere else
  np.testing.assert_allclose(mel, reference_mel(wav, pad_mode="reflect"), atol=1e-4)


def test_numpy_filterbank_and_stft_equal_librosa():
  """The mel is written in NumPy (librosa's import is ~1 s of a short inference run); its filterbank and
  STFT equal librosa's (float64)."""
  hp = audio.AUDIO_HPARAMS
  want = librosa.filters.mel(sr=SR, n_fft=800, n_mels=80, fmin=55, fmax=7600, dtype=np.float64)
  np.testing.assert_allclose(audio.mel_basis(), want, rtol=1e-12, atol=1e-15)
  signal = _speechy(0.7).astype(np.float64)
  spec = librosa.stft(signal, n_fft=800, hop_length=200, win_length=800, window="hann", pad_mode="reflect")
  np.testing.assert_allclose(audio.stft_magnitude(signal, hp), np.abs(spec), rtol=1e-10, atol=1e-10)


def test_hparams_exported():
  hp = audio.AUDIO_HPARAMS.as_dict()
  assert hp["sample_rate"] == 16000 and hp["n_fft"] == 800 and hp["hop_size"] == 200
  assert hp["num_mels"] == 80 and hp["fmin"] == 55 and hp["fmax"] == 7600 and hp["pad_mode"] == "reflect"
  basis = audio.mel_basis()
  assert basis.shape == (80, 401) and audio.mel_basis() is basis  # cached
  assert not basis.flags.writeable


def test_silent_audio_is_the_documented_floor():
  mel = audio.melspectrogram(np.zeros(SR, np.float32))
  assert np.all(mel == -4.0)
  with pytest.raises(audio.AudioError, match="silent"):
    audio.melspectrogram(np.zeros(SR, np.float32), source="quiet.wav", allow_silent=False)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_audio_raises_naming_the_source(bad):
  wav = _speechy(1.0)
  wav[100] = bad
  with pytest.raises(audio.AudioError, match="clip7.wav.*NaN/inf"):
    audio.melspectrogram(wav, source="clip7.wav")


def test_too_short_audio_raises():
  assert audio.min_samples() == 3000
  assert audio.melspectrogram(_speechy(1.0)[:3000]).shape == (80, 16)
  with pytest.raises(audio.AudioError, match="too short"):
    audio.melspectrogram(_speechy(1.0)[:2999], source="short.wav")


def test_bad_shapes_and_dtypes_raise():
  with pytest.raises(audio.AudioError, match="mono"):
    audio.melspectrogram(np.zeros((2, SR), np.float32))
  with pytest.raises(audio.AudioError, match="float"):
    audio.melspectrogram(np.zeros(SR, np.int16))


def test_load_wav_resamples_and_mixes_down(tmp_path):
  wav = _speechy(1.0)
  stereo_44k = librosa.resample(wav, orig_sr=SR, target_sr=44100)
  path = tmp_path / "stereo.wav"
  soundfile.write(path, np.stack([stereo_44k, stereo_44k], axis=1), 44100)
  loaded = audio.load_wav(path)
  assert loaded.dtype == np.float32 and loaded.ndim == 1
  assert abs(loaded.size - SR) <= 2
  n = min(loaded.size, wav.size)
  assert np.corrcoef(loaded[:n], wav[:n])[0, 1] > 0.99


def test_load_wav_errors_name_the_file(tmp_path):
  with pytest.raises(audio.AudioError, match="not found.*nope.wav"):
    audio.load_wav(tmp_path / "nope.wav")
  garbage = tmp_path / "garbage.wav"
  garbage.write_bytes(b"this is not audio at all" * 10)
  with pytest.raises(audio.AudioError, match="garbage.wav"):
    audio.load_wav(garbage)
