"""Audio loading and the Wav2Lip mel spectrogram, exactly as the original computes it.

Owns: the audio hyper-parameters (`AUDIO_HPARAMS`), `load_wav` (any audio file -> 16 kHz mono float32:
PCM/FLAC exact through libsndfile, compressed audio through PyAV, which tolerates damage) and
`melspectrogram` (16 kHz wav -> (80, T) float32, 80 mel steps per second), plus `AudioError`.

The mel follows the original pipeline (spec section 5):
  pre-emphasis y[n] = x[n] - 0.97 x[n-1] (what scipy.signal.lfilter computed in the original)
  -> |STFT| (n_fft 800, hop 200, Hann window 800, center=True, **reflect** padding, as librosa 0.7 did)
  -> Slaney mel filterbank (80 bands, 55..7600 Hz)
  -> dB = 20 log10(max(1e-5, mel)) - 20
  -> clip(8 (dB + 100) / 100 - 4, -4, 4).
The computation runs in float64 (as the original did: lfilter promotes to float64) and returns float32.
It is written in NumPy (framing + np.fft.rfft, the Slaney filterbank) instead of calling scipy.signal.lfilter,
librosa.stft and librosa.filters.mel because importing those costs ~1.7 s of a ~9 s inference run on a short
clip; the results are equal (tests/test_audio.py checks the filterbank and the STFT against librosa's
and the mel against an independent reference). librosa is still what resamples (`load_wav`).

Edge cases (decided here, relied on downstream):
  * Silent audio (all zeros, or below the 1e-5 amplitude floor) is NOT an error by default: every mel value
    is the floor, exactly -4.0 (20 log10(1e-5) - 20 = -120 dB -> -5.6 -> clipped to -4). Pass
    `allow_silent=False` (batch preprocessing does) to get an `AudioError` instead.
  * NaN or inf samples -> `AudioError` naming the source and the count of bad samples (the original crashed
    later with "Mel contains nan!").
  * Audio too short for one 16-step mel window (fewer than `min_samples()` = 3000 samples at 16 kHz,
    0.1875 s) -> `AudioError`.
  * The result is checked to be finite; it can never carry NaN downstream.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import TYPE_CHECKING

import numpy as np
import soundfile

from lipsync_jax import windows

if TYPE_CHECKING:
  from lipsync_jax.media import video as video_lib


class AudioError(ValueError):
  """Audio that cannot be turned into a valid mel: missing/unreadable file, NaN/inf, too short, silent."""


@dataclasses.dataclass(frozen=True)
class AudioHParams:
  """The original Wav2Lip audio hyper-parameters (hparams.py of the PyTorch repo)."""

  sample_rate: int = 16000
  num_mels: int = 80
  n_fft: int = 800
  hop_size: int = 200
  win_size: int = 800
  window: str = "hann"
  center: bool = True
  pad_mode: str = "reflect"  # librosa 0.7 default; librosa >= 0.10 defaults to 'constant'
  preemphasis: float = 0.97
  fmin: float = 55.0
  fmax: float = 7600.0
  ref_level_db: float = 20.0
  min_level_db: float = -100.0
  max_abs_value: float = 4.0  # symmetric normalisation to [-4, 4]
  min_amplitude: float = 1e-5  # floor before log10
  mel_window_steps: int = windows.MEL_STEPS  # steps one training/inference window needs

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


AUDIO_HPARAMS = AudioHParams()
# Peak absolute amplitude at or below which a wav counts as silent for `allow_silent=False`.
SILENCE_PEAK = 1e-4


def min_samples(hparams: AudioHParams = AUDIO_HPARAMS) -> int:
  """Fewest samples whose mel has one full window: T = 1 + n // hop >= 16 steps (3000 at 16 kHz)."""
  return (hparams.mel_window_steps - 1) * hparams.hop_size


def num_mel_steps(num_samples: int, hparams: AudioHParams = AUDIO_HPARAMS) -> int:
  """Mel steps (T) `melspectrogram` returns for `num_samples` samples (center=True framing)."""
  return 1 + num_samples // hparams.hop_size


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
  """Slaney's mel scale (librosa's htk=False): linear below 1 kHz, logarithmic above."""
  hz = np.asarray(hz, np.float64)
  f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
  min_log_mel = min_log_hz / f_sp
  return np.where(
    hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, hz / f_sp
  )


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
  mels = np.asarray(mels, np.float64)
  f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
  min_log_mel = min_log_hz / f_sp
  return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels)


@functools.lru_cache(maxsize=8)
def _mel_basis(sample_rate: int, n_fft: int, num_mels: int, fmin: float, fmax: float) -> np.ndarray:
  """librosa.filters.mel(htk=False, norm='slaney') in float64: triangles on the Slaney mel scale, each
  scaled to unit area (2 / bandwidth)."""
  fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
  mel_freqs = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), num_mels + 2))
  widths = np.diff(mel_freqs)
  ramps = mel_freqs[:, None] - fft_freqs[None, :]
  lower = -ramps[:-2] / widths[:-1, None]
  upper = ramps[2:] / widths[1:, None]
  basis = np.maximum(0.0, np.minimum(lower, upper))
  basis *= (2.0 / (mel_freqs[2 : num_mels + 2] - mel_freqs[:num_mels]))[:, None]
  basis.setflags(write=False)
  return basis


def stft_magnitude(signal: np.ndarray, hparams: AudioHParams = AUDIO_HPARAMS) -> np.ndarray:
  """|librosa.stft(signal, n_fft, hop, win, periodic Hann, center=True, pad_mode)| as (1 + n_fft/2, T)."""
  if hparams.window != "hann" or hparams.win_size != hparams.n_fft or not hparams.center:
    raise ValueError(
      "stft_magnitude implements the original's STFT: a periodic Hann window of n_fft, centred"
    )
  padded = np.pad(signal, hparams.n_fft // 2, mode=hparams.pad_mode)
  frames = np.lib.stride_tricks.sliding_window_view(padded, hparams.n_fft)[:: hparams.hop_size]
  window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(hparams.n_fft) / hparams.n_fft)
  return np.abs(np.fft.rfft(frames * window, axis=1)).T


def mel_basis(hparams: AudioHParams = AUDIO_HPARAMS) -> np.ndarray:
  """The (num_mels, n_fft//2+1) Slaney filterbank, computed once and cached (read-only)."""
  return _mel_basis(hparams.sample_rate, hparams.n_fft, hparams.num_mels, hparams.fmin, hparams.fmax)


# libsndfile reads these too, but as packet-structured compressed streams they go through PyAV, which
# skips damaged packets and keeps the timing (lipsync_jax.media.video); PCM/FLAC stay on libsndfile, exact.
_PYAV_FORMATS = ("MP3", "MPEG", "OGG")


def load_wav(
  path, sr: int = AUDIO_HPARAMS.sample_rate, report: video_lib.DecodeReport | None = None
) -> np.ndarray:
  """Reads an audio file as mono float32 at `sr` Hz.

  Uncompressed and lossless files libsndfile reads (wav, flac, aiff, ...) are read exactly with soundfile,
  mixed down and resampled with librosa (soxr_hq, librosa.load's default). Compressed audio (mp3, ogg
  vorbis/opus, aac, ac3, the audio track of an .mp4, ...) is decoded by
  `lipsync_jax.media.video.read_audio` (PyAV; the samples inference reads): damaged packets are skipped
  and their span filled with silence so later audio keeps its time, counted in `report` (a
  video.DecodeReport) if given. Missing or unreadable files raise `AudioError` naming the file.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise AudioError(f"audio file not found: {path!r}")
  try:
    if soundfile.info(path).format in _PYAV_FORMATS:
      raise TypeError("compressed: decoded by PyAV")
    data, file_sr = soundfile.read(path, dtype="float32", always_2d=True)  # (n, channels)
  except (soundfile.LibsndfileError, RuntimeError, TypeError) as sndfile_error:
    # Local import: PyAV (and OpenCV with it) is only needed for compressed audio and containers.
    from lipsync_jax.media import video as video_lib

    try:
      return video_lib.read_audio(path, sr=sr, report=report)
    except video_lib.VideoError as av_error:
      raise AudioError(
        f"cannot read audio from {path!r}: libsndfile: {sndfile_error}; PyAV: {av_error}"
      ) from av_error
  import librosa  # pylint: disable=import-outside-toplevel  (only here: its import costs ~1 s)

  wav = librosa.to_mono(data.T)
  if file_sr != sr:
    wav = librosa.resample(wav, orig_sr=file_sr, target_sr=sr, res_type="soxr_hq")
  return np.ascontiguousarray(wav, dtype=np.float32)


def check_wav(
  wav: np.ndarray, source: str = "<array>", allow_silent: bool = True, hparams: AudioHParams = AUDIO_HPARAMS
) -> np.ndarray:
  """Validates a wav for `melspectrogram`; returns it as a 1-D float64 array or raises `AudioError`."""
  wav = np.asarray(wav)
  if wav.ndim == 2 and 1 in wav.shape:
    wav = wav.reshape(-1)
  if wav.ndim != 1:
    raise AudioError(f"{source}: expected a mono 1-D wav, got shape {wav.shape}; mix channels down first")
  if not np.issubdtype(wav.dtype, np.floating):
    raise AudioError(f"{source}: expected float samples in [-1, 1], got dtype {wav.dtype}")
  wav = wav.astype(np.float64, copy=False)
  bad = int(np.size(wav) - np.count_nonzero(np.isfinite(wav)))
  if bad:
    raise AudioError(f"{source}: {bad} of {wav.size} samples are NaN/inf; fix or drop this audio")
  if wav.size < min_samples(hparams):
    raise AudioError(
      f"{source}: audio too short ({wav.size} samples = {wav.size / hparams.sample_rate:.3f} s); "
      f"one {hparams.mel_window_steps}-step mel window needs >= {min_samples(hparams)} samples"
    )
  if not allow_silent and float(np.max(np.abs(wav))) <= SILENCE_PEAK:
    raise AudioError(f"{source}: audio is silent (peak <= {SILENCE_PEAK}); its mel would be all -4")
  return wav


def melspectrogram(
  wav: np.ndarray, source: str = "<array>", allow_silent: bool = True, hparams: AudioHParams = AUDIO_HPARAMS
) -> np.ndarray:
  """16 kHz mono wav (n,) -> normalised mel (num_mels, 1 + n // hop) float32 in [-4, 4].

  `source` names the audio in error messages (e.g. the file path). See the module docstring for silent,
  NaN and too-short audio.
  """
  wav = check_wav(wav, source, allow_silent, hparams)
  emphasised = np.concatenate([wav[:1], wav[1:] - hparams.preemphasis * wav[:-1]])
  mel = mel_basis(hparams) @ stft_magnitude(emphasised, hparams)
  db = 20.0 * np.log10(np.maximum(hparams.min_amplitude, mel)) - hparams.ref_level_db
  scale = 2.0 * hparams.max_abs_value
  normalised = scale * (db - hparams.min_level_db) / -hparams.min_level_db - hparams.max_abs_value
  out = np.clip(normalised, -hparams.max_abs_value, hparams.max_abs_value).astype(np.float32)
  if not np.all(np.isfinite(out)):  # cannot happen after the input checks; kept as a hard guarantee
    raise AudioError(f"{source}: mel spectrogram contains NaN/inf")
  return out
