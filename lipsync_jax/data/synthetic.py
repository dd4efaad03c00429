"""The built-in demo corpus: cartoon talking faces whose mouths are driven by speech-like synthetic audio.

Owns: the synthetic speech generator, the audio -> mouth-shape mapping, the face renderer, and
`make_corpus` / the CLI that write an LRS2-style corpus:

  DIR/<speaker>/<clip>.mp4          25 fps H.264 (160x160 by default) + 16 kHz AAC audio (lipsync_jax.media.video)
  DIR/<speaker>/<clip>.mouth.npy    (N, 4) float32 per-frame ground-truth mouth parameters MOUTH_PARAMS
  DIR/<speaker>/<clip>.boxes.npy    (N, 4) float32 true face box (x1, y1, x2, y2) per frame, pixels
  DIR/train.txt val.txt test.txt    lines "speaker/clip" (no extension); speakers are disjoint across
                                    splits whenever there are >= 3 speakers
  DIR/corpus_info.json              the build arguments and a summary (written last = build complete)

  python -m lipsync_jax.data.synthetic --out DIR [--clips N] [--seed S] [--workers W]

Audio (16 kHz): concatenated segments -- voiced vowels (sawtooth glottal source with a varying f0, through
three formant resonators of one of 5 vowels), unvoiced noise bursts (band-passed noise, fricative-like) and
short pauses (<= 120 ms, never two in a row) -- with loudness normalised per clip.

Mouth (per frame f, a deterministic function of the audio): the audio in a 40 ms window centred at the
frame's centre time + 30 ms (the mouth leads the sound, as in real speech) gives
  open  = voiced loudness (dB) mapped to [0, 1] x energy-weighted vowel jaw openness (a > o > e > u > i)
  width = energy-weighted vowel spreading (i/e wide, u/o narrow), neutral 0.5 without voicing
  round = energy-weighted vowel rounding (u, o)
  burst = share of the window's energy that is unvoiced noise (teeth show, lips spread)
so several audio features drive the shape. Everything else varies per clip (identity per speaker; head
position, size, lighting, background per clip; a small per-frame head jitter and sensor noise) from random
streams independent of the audio, so nothing outside the mouth correlates with it.

The face is drawn to be found by OpenCV's bundled Haar frontal-face cascade (skin shading, dark eye sockets,
brows, a lit nose bridge). Same seed -> identical audio, mouth parameters, boxes and frames.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

import cv2
import numpy as np
import scipy.signal
import tqdm

from lipsync_jax.media import video

FPS = 25
SAMPLE_RATE = 16000
FRAME_SIZE = 160
MOUTH_PARAMS = ("open", "width", "round", "burst")
MOUTH_LEAD_SECONDS = 0.03  # the mouth shows the sound ~30 ms before it is heard
MOUTH_WINDOW_SECONDS = 0.04
SPLIT_FRACTIONS = {"val": 0.1, "test": 0.1}  # the rest is train
DEFAULT_NUM_CLIPS = 60
DEFAULT_SECONDS = (3.0, 5.0)
CLIPS_PER_SPEAKER = 4

# name -> (F1, F2, F3) Hz, mouth (width, round, jaw openness)
VOWELS = {
  "a": ((730, 1090, 2440), (0.55, 0.0, 1.0)),
  "e": ((530, 1840, 2480), (0.8, 0.05, 0.65)),
  "i": ((270, 2290, 3010), (1.0, 0.0, 0.35)),
  "o": ((570, 840, 2410), (0.3, 0.7, 0.75)),
  "u": ((300, 870, 2240), (0.1, 1.0, 0.4)),
}
_VOWEL_NAMES = tuple(VOWELS)
_FORMANT_BANDWIDTHS = (90.0, 110.0, 170.0)
_PAUSE, _VOICED, _BURST = 0, 1, 2


# ----------------------------------------------------------------------------------------------------------
# Audio
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Voice:
  f0: float  # base pitch, Hz
  formant_scale: float  # vocal-tract length factor
  burst_centre: float  # Hz, centre of the fricative noise band


def random_voice(rng: np.random.Generator) -> Voice:
  return Voice(
    f0=float(rng.uniform(90, 240)),
    formant_scale=float(rng.uniform(0.9, 1.15)),
    burst_centre=float(rng.uniform(3000, 5500)),
  )


def _resonator(signal: np.ndarray, freq: float, bandwidth: float) -> np.ndarray:
  """Two-pole resonator (unit gain at DC-normalised peak) at `freq` Hz."""
  r = math.exp(-math.pi * bandwidth / SAMPLE_RATE)
  theta = 2 * math.pi * freq / SAMPLE_RATE
  a = [1.0, -2 * r * math.cos(theta), r * r]
  return scipy.signal.lfilter([1.0 - r], a, signal)


def _envelope(n: int, edge: int) -> np.ndarray:
  env = np.ones(n)
  edge = min(edge, n // 2)
  if edge > 0:
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(edge) / edge)
    env[:edge] = ramp
    env[n - edge :] = ramp[::-1]
  return env


def synthesize_speech(rng: np.random.Generator, seconds: float, voice: Voice):
  """Speech-like audio: returns (wav float32 (n,), kind int8 (n,), vowel int8 (n,), -1 where not voiced)."""
  n_total = int(round(seconds * SAMPLE_RATE))
  wav = np.zeros(n_total)
  kind = np.zeros(n_total, np.int8)
  vowel = np.full(n_total, -1, np.int8)
  edge = int(0.012 * SAMPLE_RATE)
  pos, previous = 0, _PAUSE
  phase = 0.0
  while pos < n_total:
    choice = rng.choice(3, p=(0.15, 0.63, 0.22))
    if choice == _PAUSE and previous == _PAUSE:
      choice = _VOICED
    duration = {_PAUSE: (0.04, 0.12), _VOICED: (0.08, 0.26), _BURST: (0.05, 0.14)}[choice]
    n = min(int(rng.uniform(*duration) * SAMPLE_RATE), n_total - pos)
    level = rng.uniform(0.3, 1.0)
    if choice == _VOICED:
      v = int(rng.integers(len(_VOWEL_NAMES)))
      f0_start, f0_end = voice.f0 * rng.uniform(0.85, 1.15, size=2)
      f0 = np.linspace(f0_start, f0_end, n) * (1 + 0.01 * rng.standard_normal(n).cumsum() / math.sqrt(n))
      cycles = phase + np.cumsum(f0) / SAMPLE_RATE
      phase = float(cycles[-1] % 1.0)
      source = 2.0 * (cycles % 1.0) - 1.0  # sawtooth glottal source
      source += 0.02 * rng.standard_normal(n)  # breathiness
      segment = np.zeros(n)
      for formant, bandwidth, gain in zip(VOWELS[_VOWEL_NAMES[v]][0], _FORMANT_BANDWIDTHS, (1.0, 0.6, 0.3)):
        segment += gain * _resonator(source, formant * voice.formant_scale, bandwidth)
      segment /= np.sqrt(np.mean(segment**2)) + 1e-9
      vowel[pos : pos + n] = v
    elif choice == _BURST:
      centre = voice.burst_centre * rng.uniform(0.8, 1.2)
      sos = scipy.signal.butter(
        2, (centre * 0.6, min(centre * 1.4, 7800)), btype="bandpass", fs=SAMPLE_RATE, output="sos"
      )
      segment = scipy.signal.sosfilt(sos, rng.standard_normal(n))
      segment /= np.sqrt(np.mean(segment**2)) + 1e-9
      level *= 0.5
    else:
      segment = np.zeros(n)
    wav[pos : pos + n] = level * segment * _envelope(n, edge)
    kind[pos : pos + n] = choice
    pos += n
    previous = choice
  active = kind != _PAUSE
  if active.any():
    wav *= 0.1 / (np.sqrt(np.mean(wav[active] ** 2)) + 1e-12)  # active speech at -20 dBFS RMS
  wav += 1e-3 * rng.standard_normal(n_total)  # room noise floor (-60 dBFS): never digital silence
  wav *= min(1.0, 0.95 / np.max(np.abs(wav)))
  return wav.astype(np.float32), kind, vowel


def mouth_parameters(wav: np.ndarray, kind: np.ndarray, vowel: np.ndarray, num_frames: int) -> np.ndarray:
  """Per-frame (num_frames, 4) float32 MOUTH_PARAMS from the audio around each frame (see module doc)."""
  power = wav.astype(np.float64) ** 2
  voiced = np.where(kind == _VOICED, power, 0.0)
  burst = np.where(kind == _BURST, power, 0.0)
  targets = np.array([VOWELS[name][1] for name in _VOWEL_NAMES])  # (5, 3) width, round, openness
  vowel_width, vowel_round, vowel_jaw = (
    np.where(vowel >= 0, targets[np.maximum(vowel, 0), k], 0.0) for k in range(3)
  )
  half = int(MOUTH_WINDOW_SECONDS * SAMPLE_RATE / 2)
  out = np.zeros((num_frames, 4), np.float32)
  floor = 1e-4**2  # power floor: below it a window counts as quiet
  for f in range(num_frames):
    centre = int(((f + 0.5) / FPS + MOUTH_LEAD_SECONDS) * SAMPLE_RATE)
    lo, hi = max(0, centre - half), min(wav.size, centre + half)
    if hi <= lo:
      out[f] = (0.0, 0.5, 0.2, 0.0)
      continue
    e_voiced = voiced[lo:hi].sum()
    e_burst = burst[lo:hi].sum()
    count = hi - lo
    voiced_db = 10 * math.log10(e_voiced / count + 1e-10)
    loudness = float(np.clip((voiced_db + 40.0) / 22.0, 0.0, 1.0))
    jaw = (voiced[lo:hi] @ vowel_jaw[lo:hi]) / (e_voiced + 1e-20)
    opening = loudness * jaw
    mix = e_voiced / (e_voiced + count * floor * 100)  # how much the vowel targets apply
    width = mix * (voiced[lo:hi] @ vowel_width[lo:hi]) / (e_voiced + 1e-20) + (1 - mix) * 0.5
    rounding = mix * (voiced[lo:hi] @ vowel_round[lo:hi]) / (e_voiced + 1e-20) + (1 - mix) * 0.2
    burst_db = 10 * math.log10(e_burst / count + 1e-10)
    burstiness = e_burst / (e_voiced + e_burst + 1e-20) * float(np.clip((burst_db + 45.0) / 15.0, 0, 1))
    out[f] = (opening, width, rounding, burstiness)
  return out


def synthesize_audio_and_mouth(seed: int = 0, seconds: float = 2.0, voice: Voice | None = None):
  """Audio + mouth parameters only (no video), for tests: returns (wav (n,) f32, mouth (N, 4) f32)."""
  rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
  voice = voice or random_voice(rng)
  wav, kind, vowel = synthesize_speech(rng, seconds, voice)
  num_frames = int(seconds * FPS)
  return wav, mouth_parameters(wav, kind, vowel, num_frames)


def oracle_sync_accuracy(
  mouths, num_pairs: int = 20000, seed: int = 0, tolerance: float = 0.02, window: int = 5
) -> float:
  """Accuracy cap of a perfect sync expert on this corpus, sampling pairs like the original (spec sec. 6).

  mouths: per-clip (N, 4) mouth parameters (the .mouth.npy files). A pair takes a clip, frames a != b,
  label 1 (frames at a) or 0 (frames at b) with p 0.5; the audio is always at a. The oracle knows the true
  mouth sequence of the audio window and calls a pair in sync iff the shown window's mouth parameters match
  it within `tolerance` (mean absolute difference); negatives that look like the positive are its errors.
  """
  rng = np.random.default_rng(seed)
  mouths = [np.asarray(m, np.float32) for m in mouths if len(m) > 3 * window]
  if not mouths:
    raise ValueError(f"oracle_sync_accuracy: no clip has more than {3 * window} frames")
  correct = 0
  for _ in range(num_pairs):
    mouth = mouths[rng.integers(len(mouths))]
    a, b = rng.choice(len(mouth) - window + 1, size=2, replace=False)
    label = rng.random() < 0.5
    shown = mouth[a : a + window] if label else mouth[b : b + window]
    predicted = float(np.abs(shown - mouth[a : a + window]).mean()) <= tolerance
    correct += predicted == label
  return correct / num_pairs


# ----------------------------------------------------------------------------------------------------------
# Faces
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Identity:
  """What stays the same for a speaker across clips."""

  skin: tuple  # BGR 0..255
  hair: tuple
  lips: tuple
  iris: tuple
  aspect: float  # face height / width
  eye_spacing: float  # fraction of face width
  eye_size: float
  brow_thickness: float
  brow_tilt: float
  nose_length: float
  mouth_width: float  # fraction of face width
  hair_style: int  # 0 cap, 1 short, 2 long
  voice: Voice


def random_identity(rng: np.random.Generator) -> Identity:
  tone = rng.uniform(0, 1)
  skin_light = np.array([185, 210, 245])  # BGR pale
  skin_dark = np.array([85, 120, 165])
  skin = (1 - tone) * skin_light + tone * skin_dark + rng.uniform(-12, 12, 3)
  hair = rng.choice([[20, 20, 25], [30, 50, 90], [40, 80, 150], [90, 90, 95], [20, 35, 60]])
  lips = skin * np.array([0.6, 0.55, 0.9]) + np.array([0, 0, 10])
  iris = rng.choice([[60, 40, 20], [120, 90, 40], [40, 90, 60], [30, 30, 30]])
  return Identity(
    skin=tuple(float(c) for c in np.clip(skin, 0, 255)),
    hair=tuple(float(c) for c in hair),
    lips=tuple(float(c) for c in np.clip(lips, 0, 255)),
    iris=tuple(float(c) for c in iris),
    aspect=float(rng.uniform(1.18, 1.34)),
    eye_spacing=float(rng.uniform(0.19, 0.23)),
    eye_size=float(rng.uniform(0.11, 0.14)),
    brow_thickness=float(rng.uniform(0.035, 0.06)),
    brow_tilt=float(rng.uniform(-0.03, 0.04)),
    nose_length=float(rng.uniform(0.14, 0.2)),
    mouth_width=float(rng.uniform(0.32, 0.40)),
    hair_style=int(rng.integers(3)),
    voice=random_voice(rng),
  )


@dataclasses.dataclass(frozen=True)
class Scene:
  """What varies per clip: placement, size, lighting, background."""

  centre: tuple  # (x, y) face centre, pixels
  face_width: float
  gain: float
  light_direction: float  # radians
  light_strength: float
  tint: tuple  # BGR multipliers
  background: tuple  # two BGR colours
  background_angle: float


def random_scene(rng: np.random.Generator, frame_size: int) -> Scene:
  face_width = frame_size * rng.uniform(0.42, 0.55)
  margin = frame_size * 0.09
  centre = (frame_size / 2 + rng.uniform(-margin, margin), frame_size / 2 + rng.uniform(-margin, margin))
  return Scene(
    centre=(float(centre[0]), float(centre[1])),
    face_width=float(face_width),
    gain=float(rng.uniform(0.8, 1.15)),
    light_direction=float(rng.uniform(0, 2 * math.pi)),
    light_strength=float(rng.uniform(0.0, 0.25)),
    tint=tuple(float(t) for t in rng.uniform(0.92, 1.08, 3)),
    background=tuple(tuple(float(c) for c in rng.uniform(30, 230, 3)) for _ in range(2)),
    background_angle=float(rng.uniform(0, 2 * math.pi)),
  )


def _luma(bgr) -> float:
  return float(0.114 * bgr[0] + 0.587 * bgr[1] + 0.299 * bgr[2])


_SHIFT = 4  # cv2 drawing fractional bits (1/16 px)


def _p(x: float) -> int:
  return int(round(x * (1 << _SHIFT)))


def _ellipse(img, centre, axes, colour, thickness=-1, arc=(0, 360)):
  cv2.ellipse(
    img,
    (_p(centre[0]), _p(centre[1])),
    (max(0, _p(axes[0])), max(0, _p(axes[1]))),
    0,
    arc[0],
    arc[1],
    colour,
    thickness,
    cv2.LINE_AA,
    _SHIFT,
  )


class FaceRenderer:
  """Draws one clip's frames: a static face layer (rendered once) moved by the jitter + a per-frame mouth."""

  def __init__(self, identity: Identity, scene: Scene, frame_size: int = FRAME_SIZE):
    self.identity, self.scene, self.size = identity, scene, frame_size
    size = frame_size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    # Lighting field (per clip): gain x directional gradient x tint.
    light = scene.gain * (
      1
      + scene.light_strength
      * (np.cos(scene.light_direction) * xx * 2 + np.sin(scene.light_direction) * yy * 2)
    )
    self.light = light[..., None] * np.array(scene.tint, np.float32)
    ramp = np.clip(0.5 + np.cos(scene.background_angle) * xx + np.sin(scene.background_angle) * yy, 0, 1)
    c0, c1 = (np.array(c, np.float32) for c in scene.background)
    # Keep the backdrop darker than the face (as in most portraits): the cascade keys on a face that is
    # brighter than its surroundings.
    skin_luma = _luma(identity.skin)
    c0, c1 = (c * min(1.0, 0.8 * skin_luma / max(_luma(c), 1.0)) for c in (c0, c1))
    self.background = ((1 - ramp[..., None]) * c0 + ramp[..., None] * c1) * self.light

    fw = scene.face_width
    fh = fw * identity.aspect
    self.face_axes = (fw / 2, fh / 2)
    cx, cy = scene.centre
    self.mouth_centre = (cx, cy + 0.29 * fh)
    self.fw, self.fh = fw, fh
    self.face_rgb, self.face_alpha = self._static_face(cx, cy, fw, fh)
    mx, my = int(np.clip(self.mouth_centre[0], 0, size - 1)), int(np.clip(self.mouth_centre[1], 0, size - 1))
    self.mouth_light = self.light[my, mx]

  def _static_face(self, cx, cy, fw, fh):
    ident, size = self.identity, self.size
    face = np.zeros((size, size, 3), np.float32)
    alpha = np.zeros((size, size), np.float32)
    hair = tuple(ident.hair)
    # Hair behind the head.
    if ident.hair_style == 2:
      _ellipse(face, (cx, cy - 0.02 * fh), (0.62 * fw, 0.58 * fh), hair)
      _ellipse(alpha, (cx, cy - 0.02 * fh), (0.62 * fw, 0.58 * fh), 1.0)
    else:
      _ellipse(face, (cx, cy - 0.12 * fh), (0.54 * fw, 0.46 * fh), hair)
      _ellipse(alpha, (cx, cy - 0.12 * fh), (0.54 * fw, 0.46 * fh), 1.0)
    # Ears.
    for side in (-1, 1):
      _ellipse(
        face,
        (cx + side * 0.49 * fw, cy - 0.02 * fh),
        (0.08 * fw, 0.12 * fh),
        tuple(0.85 * c for c in ident.skin),
      )
      _ellipse(alpha, (cx + side * 0.49 * fw, cy - 0.02 * fh), (0.08 * fw, 0.12 * fh), 1.0)
    # Skin with volume shading: darker towards the rim, lit cheeks and nose bridge.
    skin_mask = np.zeros((size, size), np.float32)
    _ellipse(skin_mask, (cx, cy), (fw / 2, fh / 2), 1.0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r2 = ((xx - cx) / (fw / 2)) ** 2 + ((yy - cy) / (fh / 2)) ** 2
    shade = 1.05 - 0.35 * np.clip(r2, 0, 1) ** 1.5
    skin = np.array(ident.skin, np.float32)
    face = face * (1 - skin_mask[..., None]) + skin_mask[..., None] * skin * shade[..., None]
    alpha = np.maximum(alpha, skin_mask)
    # Fringe / hairline over the forehead.
    if ident.hair_style != 1:
      _ellipse(face, (cx, cy - 0.47 * fh), (0.5 * fw, 0.14 * fh), hair)
    else:
      _ellipse(face, (cx, cy - 0.5 * fh), (0.45 * fw, 0.1 * fh), hair)
    eye_y = cy - 0.1 * fh
    dx = ident.eye_spacing * fw
    es = ident.eye_size * fw
    for side in (-1, 1):
      ex = cx + side * dx
      # Dark eye socket, eye white, iris, pupil, upper lid line.
      _ellipse(face, (ex, eye_y), (1.25 * es, 0.8 * es), tuple(0.55 * c for c in ident.skin))
      _ellipse(face, (ex, eye_y), (0.85 * es, 0.42 * es), (215, 220, 225))
      _ellipse(face, (ex, eye_y), (0.42 * es, 0.42 * es), tuple(ident.iris))
      _ellipse(face, (ex, eye_y), (0.2 * es, 0.2 * es), (15, 15, 15))
      _ellipse(face, (ex, eye_y), (0.9 * es, 0.47 * es), (25, 25, 30), max(1, round(0.12 * es)), (180, 360))
      # Brow: thick dark bar, slightly tilted.
      by = eye_y - 1.15 * es
      tilt = side * ident.brow_tilt * fw
      pts = np.array([[ex - 1.2 * es, by + tilt], [ex + 1.2 * es, by - tilt]])
      if side < 0:
        pts = pts[::-1]
      cv2.line(
        face,
        (_p(pts[0][0]), _p(pts[0][1])),
        (_p(pts[1][0]), _p(pts[1][1])),
        hair,
        max(1, int(round(ident.brow_thickness * fw))),
        cv2.LINE_AA,
        _SHIFT,
      )
    # Nose: lit bridge, shadowed sides, nostrils.
    nose_top, nose_tip = eye_y + 0.2 * es, cy + ident.nose_length * fh * 0.8
    highlight = tuple(min(255.0, 1.12 * c) for c in ident.skin)
    shadow = tuple(0.72 * c for c in ident.skin)
    nose_mid, nose_half = (nose_top + nose_tip) / 2, (nose_tip - nose_top) / 2
    _ellipse(face, (cx + 0.045 * fw, nose_mid), (0.03 * fw, nose_half), shadow)
    _ellipse(face, (cx, nose_mid), (0.035 * fw, nose_half), highlight)
    _ellipse(face, (cx, nose_tip), (0.085 * fw, 0.04 * fh), shadow)
    for side in (-1, 1):
      _ellipse(face, (cx + side * 0.04 * fw, nose_tip + 0.01 * fh), (0.02 * fw, 0.012 * fh), (40, 40, 50))
    return face * self.light, alpha[..., None]

  def mouth_box(self):
    """A box (x1, y1, x2, y2) that holds the mouth at any opening (before jitter)."""
    mx, my = self.mouth_centre
    w, h = self.identity.mouth_width * self.fw * 0.75, 0.2 * self.fh
    return mx - w, my - h, mx + w, my + h

  def face_box(self, offset=(0.0, 0.0)):
    (cx, cy), (ax, ay) = self.scene.centre, self.face_axes
    return (cx - ax + offset[0], cy - ay + offset[1], cx + ax + offset[0], cy + ay + offset[1])

  def render(self, mouth: np.ndarray, offset: tuple, noise: np.ndarray | None = None) -> np.ndarray:
    """One BGR uint8 frame for mouth parameters `mouth` (4,), head offset (dx, dy) px, optional noise."""
    matrix = np.float32([[1, 0, offset[0]], [0, 1, offset[1]]])
    size = (self.size, self.size)
    face = cv2.warpAffine(self.face_rgb, matrix, size, flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(self.face_alpha, matrix, size, flags=cv2.INTER_LINEAR)[..., None]
    frame = self.background * (1 - alpha) + face * alpha
    self._draw_mouth(frame, mouth, offset)
    if noise is not None:
      frame += noise
    return np.clip(frame, 0, 255).astype(np.uint8)

  def _draw_mouth(self, frame, mouth, offset):
    opening, width, rounding, burst = (float(v) for v in mouth)
    light = self.mouth_light
    cx, cy = self.mouth_centre[0] + offset[0], self.mouth_centre[1] + offset[1]
    spread = 0.72 + 0.42 * width - 0.32 * rounding + 0.15 * burst
    half_w = 0.5 * self.identity.mouth_width * self.fw * spread
    half_h = 0.01 * self.fh + opening * 0.065 * self.fh * (1 + 0.3 * rounding) + 0.015 * self.fh * burst
    lip = 0.02 * self.fh * (1 + 0.4 * rounding)
    lips = np.array(self.identity.lips, np.float32) * light
    cavity = np.array((25, 20, 60), np.float32) * light
    teeth = np.array((225, 230, 235), np.float32) * light
    _ellipse(frame, (cx, cy), (half_w + lip, half_h + lip), tuple(float(c) for c in lips))
    _ellipse(frame, (cx, cy), (half_w, half_h), tuple(float(c) for c in cavity))
    if burst > 0.02:  # upper and lower teeth, brighter the more fricative the sound
      colour = tuple(float(c) for c in cavity + min(1.0, 1.5 * burst) * (teeth - cavity))
      tooth_h = min(half_h, 0.02 * self.fh + 0.02 * self.fh * burst)
      _ellipse(frame, (cx, cy - half_h + tooth_h * 0.6), (half_w * 0.75, tooth_h * 0.6), colour)
      _ellipse(frame, (cx, cy + half_h - tooth_h * 0.5), (half_w * 0.65, tooth_h * 0.5), colour)
    if opening > 0.3:  # tongue in a wide-open mouth
      _ellipse(
        frame,
        (cx, cy + 0.6 * half_h),
        (0.55 * half_w, 0.3 * half_h),
        tuple(float(c) for c in np.array((90, 90, 190), np.float32) * light),
      )


# ----------------------------------------------------------------------------------------------------------
# Clips and the corpus
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ClipSpec:
  clip_id: str  # "speaker/clip"
  speaker_index: int
  clip_index: int
  seconds: float
  seed: int
  frame_size: int = FRAME_SIZE


def _speaker_identity(seed: int, speaker_index: int) -> Identity:
  return random_identity(np.random.default_rng(np.random.SeedSequence([seed, 1, speaker_index])))


class RenderedClip(NamedTuple):
  frames: Callable[[], Iterator[np.ndarray]]  # each call yields the same (H, W, 3) uint8 BGR frames anew
  wav: np.ndarray  # (n,) float32, 16 kHz
  mouth: np.ndarray  # (N, 4) float32 MOUTH_PARAMS
  boxes: np.ndarray  # (N, 4) float32 true face box per frame
  renderer: FaceRenderer


def render_clip(spec: ClipSpec) -> RenderedClip:
  """Everything of one clip; frames are rendered lazily (memory stays flat when streamed to a writer)."""
  identity = _speaker_identity(spec.seed, spec.speaker_index)
  streams = np.random.SeedSequence([spec.seed, 2, spec.clip_index]).spawn(4)
  audio_rng, scene_rng, jitter_rng = (np.random.default_rng(s) for s in streams[:3])
  wav, kind, vowel = synthesize_speech(audio_rng, spec.seconds, identity.voice)
  num_frames = int(round(spec.seconds * FPS))
  mouth = mouth_parameters(wav, kind, vowel, num_frames)
  scene = random_scene(scene_rng, spec.frame_size)
  renderer = FaceRenderer(identity, scene, spec.frame_size)
  # Head motion: slow sway + smoothed random walk, within ~2 px; independent of the audio.
  t = np.arange(num_frames) / FPS
  sway = jitter_rng.uniform(0, 1.5, 2)[None, :] * np.sin(
    2 * np.pi * jitter_rng.uniform(0.1, 0.5, 2)[None, :] * t[:, None] + jitter_rng.uniform(0, 6.3, 2)
  )
  walk = np.cumsum(jitter_rng.normal(0, 0.25, (num_frames, 2)), axis=0)
  walk = np.clip(walk - walk.mean(0), -1.5, 1.5)
  offsets = (sway + walk).astype(np.float32)
  boxes = np.array([renderer.face_box(o) for o in offsets], np.float32)

  def frames():
    noise_rng = np.random.default_rng(streams[3])  # sensor noise, fresh per call: frames() is repeatable
    for f in range(num_frames):
      noise = 1.5 * noise_rng.standard_normal((spec.frame_size, spec.frame_size, 1), dtype=np.float32)
      yield renderer.render(mouth[f], offsets[f], noise)

  return RenderedClip(frames, wav, mouth, boxes, renderer)


def write_clip(spec: ClipSpec, out_dir: str, threads: int = 1) -> dict:
  """Writes <speaker>/<clip>.mp4, .mouth.npy, .boxes.npy under out_dir; returns {clip_id, num_frames}.

  threads: x264 threads per clip (1: clips are small; parallelism comes from worker processes). The same
  spec gives bit-identical files.
  """
  frames, wav, mouth, boxes, _ = render_clip(spec)
  base = os.path.join(out_dir, spec.clip_id)
  os.makedirs(os.path.dirname(base), exist_ok=True)
  with video.VideoWriter(base + ".mp4", FPS, spec.frame_size, spec.frame_size, threads=threads) as writer:
    for frame in frames():
      writer.write(frame)
    writer.close(audio=wav, sample_rate=SAMPLE_RATE)
  for suffix, array in ((".mouth.npy", mouth), (".boxes.npy", boxes)):
    tmp = base + suffix + ".tmp.npy"
    np.save(tmp, array)
    os.replace(tmp, base + suffix)
  return {"clip_id": spec.clip_id, "num_frames": int(mouth.shape[0])}


def _write_clip_star(args):
  return write_clip(*args)


def plan_corpus(
  num_clips: int,
  seed: int = 0,
  seconds=DEFAULT_SECONDS,
  frame_size: int = FRAME_SIZE,
  clips_per_speaker: int = CLIPS_PER_SPEAKER,
):
  """Clip specs and split of each speaker; deterministic for the arguments."""
  if num_clips < 1:
    raise ValueError(f"num_clips must be >= 1, got {num_clips}")
  lo, hi = (seconds, seconds) if np.isscalar(seconds) else seconds
  if lo < 0.8:
    raise ValueError(f"clips must last >= 0.8 s (20 frames: the original needs > 15), got {lo}")
  num_speakers = max(min(num_clips, 3), math.ceil(num_clips / clips_per_speaker))
  rng = np.random.default_rng(np.random.SeedSequence([seed, 3]))
  durations = rng.uniform(lo, hi, num_clips)
  specs = []
  per_speaker_count = [0] * num_speakers
  for i in range(num_clips):
    speaker = i % num_speakers
    clip = per_speaker_count[speaker]
    per_speaker_count[speaker] += 1
    seconds_i = round(float(durations[i]) * FPS) / FPS  # whole frames
    specs.append(ClipSpec(f"s{speaker:03d}/{clip:05d}", speaker, i, seconds_i, seed, frame_size))
  n_val = max(1, round(SPLIT_FRACTIONS["val"] * num_speakers)) if num_speakers >= 2 else 0
  n_test = max(1, round(SPLIT_FRACTIONS["test"] * num_speakers)) if num_speakers >= 3 else 0
  n_train = num_speakers - n_val - n_test
  speaker_split = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
  return specs, speaker_split


def make_corpus(
  out_dir,
  num_clips: int = DEFAULT_NUM_CLIPS,
  seed: int = 0,
  seconds=DEFAULT_SECONDS,
  frame_size: int = FRAME_SIZE,
  workers: int | None = None,
  overwrite: bool = False,
  progress: bool = True,
) -> dict:
  """Builds the demo corpus into out_dir (layout in the module docstring); returns the summary dict.

  seconds: clip length, a number or a (min, max) range. workers: processes (default: 1 per core, at most
  2; 1 = in this process). An existing complete corpus with the same arguments is reused unless overwrite.
  """
  out_dir = os.fspath(out_dir)
  args = {
    "num_clips": int(num_clips),
    "seed": int(seed),
    "seconds": [float(s) for s in np.broadcast_to(np.asarray(seconds, float), (2,))],
    "frame_size": int(frame_size),
  }
  info_path = os.path.join(out_dir, "corpus_info.json")
  if not overwrite and os.path.isfile(info_path):
    with open(info_path) as f:
      existing = json.load(f)
    if existing.get("args") == args:
      return {**existing, "reused": True}
  start = time.time()
  specs, speaker_split = plan_corpus(num_clips, seed, tuple(args["seconds"]), frame_size)
  os.makedirs(out_dir, exist_ok=True)
  if os.path.exists(info_path):
    os.remove(info_path)
  workers = workers or min(2, os.cpu_count() or 1)
  workers = max(1, min(workers, len(specs)))
  jobs = [(spec, out_dir) for spec in specs]
  bar = tqdm.tqdm(total=len(jobs), desc="demo corpus: rendering", unit="clip", disable=not progress)
  results = []
  if workers == 1:
    for job in jobs:
      results.append(_write_clip_star(job))
      bar.update()
  else:
    # spawn: safe even when the caller has JAX/threads running (fork is not).
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
      for result in pool.imap(_write_clip_star, jobs):
        results.append(result)
        bar.update()
  bar.close()
  splits = {"train": [], "val": [], "test": []}
  for spec in specs:
    splits[speaker_split[spec.speaker_index]].append(spec.clip_id)
  for split, clip_ids in splits.items():
    tmp = os.path.join(out_dir, f"{split}.txt.tmp")
    with open(tmp, "w") as f:
      f.writelines(clip_id + "\n" for clip_id in sorted(clip_ids))
    os.replace(tmp, os.path.join(out_dir, f"{split}.txt"))
  summary = {
    "args": args,
    "out_dir": out_dir,
    "num_clips": len(results),
    "num_speakers": len(speaker_split),
    "num_frames": int(sum(r["num_frames"] for r in results)),
    "seconds_of_video": float(sum(r["num_frames"] for r in results) / FPS),
    "splits": {split: len(ids) for split, ids in splits.items()},
    "fps": FPS,
    "sample_rate": SAMPLE_RATE,
    "frame_size": frame_size,
    "mouth_params": list(MOUTH_PARAMS),
    "build_seconds": round(time.time() - start, 2),
    "workers": workers,
  }
  tmp = info_path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(summary, f, indent=2)
  os.replace(tmp, info_path)
  return {**summary, "reused": False}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--clips", type=int, default=DEFAULT_NUM_CLIPS, help="number of clips")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--min_seconds", type=float, default=DEFAULT_SECONDS[0])
  parser.add_argument("--max_seconds", type=float, default=DEFAULT_SECONDS[1])
  parser.add_argument("--frame_size", type=int, default=FRAME_SIZE)
  parser.add_argument("--workers", type=int, default=None, help="processes (default: cores, max 2)")
  parser.add_argument("--overwrite", action="store_true", help="rebuild even if an identical corpus exists")
  flags = parser.parse_args(argv)
  summary = make_corpus(
    flags.out,
    num_clips=flags.clips,
    seed=flags.seed,
    seconds=(flags.min_seconds, flags.max_seconds),
    frame_size=flags.frame_size,
    workers=flags.workers,
    overwrite=flags.overwrite,
  )
  print(json.dumps({k: v for k, v in summary.items() if k != "args"}))


if __name__ == "__main__":
  main()
