"""Window sampling exactly as the original loaders (spec section 6), and batch assembly.

Owns: which frames and mel windows one training sample reads (`window_start_range`, `plan_sample`), how a
sample is written into the batch arrays (`write_expert_sample`, `write_generator_sample`), the grain
transforms built on them (`WindowPlanner`, `BatchAssembler`) and the batch layout (`element_spec`).

Sampling (spec section 6; frame f's mel window starts at int(80 * f / 25), see lipsync_jax.windows):
  expert     a, b != a uniform over the 5-frame windows [0, N-5] (a's mel window inside the mel);
             label 1 (p = 0.5): faces = window at a, else faces = window at b; mel = window at a.
             (a is a full window start for both labels; the original checked frames a..a+4 only for
             label 1, but near a clip's end a's mel window does not fit anyway, so the ranges agree.)
  generator  a in [1, N-5] (indiv_mels use frame f-1), b != a in [0, N-5]; gt = window at a,
             inputs = concat_channels(gt with lower half zeroed, window at b); mel = window at a;
             indiv_mels[k] = mel window of frame a + k - 1, every mel window fully inside the mel.

Batches (per process; b = this process's rows of the global batch (lipsync_jax.data.pipeline), S = img_size):
  expert:    faces (b, S/2, S, 15) uint8 (lower halves, frame-major channels), mel (b, 80, 16, 1) f32,
             label (b, 1) f32
  generator: inputs (b, 5, S, S, 6) uint8, gt (b, 5, S, S, 3) uint8, indiv_mels (b, 5, 80, 16, 1) f32,
             mel (b, 80, 16, 1) f32

Decode only what a sample uses: a record is parsed with `lipsync_jax.data.records.parse_example` (frames
stay JPEG bytes) and only the 5 (expert) or 10 (generator) frames of the sample are decoded, straight into
the preallocated batch arrays; channel interleaving by cv2.mixChannels (NumPy's strided writes into the
6-channel layout cost ~0.5 ms per generator sample, as much as decoding its 10 JPEGs). Images stay uint8
(BGR, 0..255); the train step converts on device (x / 255). bench/input_bench.py measures it: float32
batches are 4x the bytes to build, copy between worker processes and transfer to the device, and
converting on the host is slower than on the device.

Errors: a record that does not parse or whose JPEG frames do not decode fails when sampled with
`CorruptRecordError` naming shard, record number and offset (we fail rather than skip so a corrupt shard
never silently changes the data; the message says to re-run preprocessing). Clips too short for a window
(<= 15 frames, or a mel that ends early) never get a window: with a shard index the pipeline leaves them out
of the global clip order up front (`window_start_range` on the index's lengths); without one
`WindowPlanner` skips and counts them, drawing another clip of the global clip list with the same
per-sample RNG (what the original loader did; still the same for any process count), and warns once per
clip.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

import cv2
import grain
import numpy as np

from lipsync_jax import windows
from lipsync_jax.data import records
from lipsync_jax.data.tfrecord import CorruptRecordError, RawClip

MODES = ("expert", "generator")
MIN_CLIP_FRAMES = 3 * windows.SYNC_T + 1  # spec: clips need more than 3*T = 15 frames
_MAX_RESAMPLES = 100


def last_mel_frame(mel_steps: int, num_frames: int, fps: float = windows.FPS) -> int:
  """Largest frame f < num_frames whose 16-step mel window lies inside a mel of `mel_steps` (-1 if none)."""
  frame = num_frames - 1
  while frame >= 0 and windows.mel_window_start(frame, fps) + windows.MEL_STEPS > mel_steps:
    frame -= 1
  return frame


def window_start_range(
  num_frames: int, mel_steps: int, mode: str, fps: float = windows.FPS
) -> tuple[int, int] | None:
  """Inclusive range [lo, hi] of frames a at which a sample of `mode` fits the clip, or None.

  expert: frames a..a+4 exist and a's mel window fits. generator: additionally a >= 1 and the windows of
  frames a-1..a+3 (indiv_mels) fit. Clips of <= 15 frames give None (spec: more than 3*T frames).
  """
  if num_frames < MIN_CLIP_FRAMES:
    return None
  last_window = num_frames - windows.SYNC_T
  mel_last = last_mel_frame(mel_steps, num_frames, fps)
  if mode == "expert":
    lo, hi = 0, min(last_window, mel_last)
  elif mode == "generator":
    lo, hi = 1, min(last_window, mel_last - (windows.SYNC_T - 2))
  else:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  return (lo, hi) if hi >= lo else None


def _draw_windows(rng: np.random.Generator, lo: int, hi: int, last_window: int) -> tuple[int, int]:
  """a uniform in [lo, hi]; b uniform over [0, last_window] without a."""
  a = int(rng.integers(lo, hi + 1))
  b = int(rng.integers(0, last_window))  # last_window values: all window starts but one
  return a, b + (b >= a)


class SamplePlan(NamedTuple):
  """What one sample reads: the parsed clip, the window starts a and b, and (expert) the label."""

  clip: records.EncodedClip
  location: str
  a: int
  b: int
  label: bool


def plan_sample(
  clip: records.EncodedClip, location: str, mode: str, rng: np.random.Generator, bounds: tuple[int, int]
) -> SamplePlan:
  a, b = _draw_windows(rng, *bounds, clip.num_frames - windows.SYNC_T)
  label = bool(rng.random() < 0.5) if mode == "expert" else True
  return SamplePlan(clip, location, a, b, label)


def _mel_window(clip: records.EncodedClip, frame: int) -> np.ndarray:
  start = windows.mel_window_start(frame, clip.fps)
  return clip.mel[:, start : start + windows.MEL_STEPS, None]  # (80, 16, 1)


def _frame(clip: records.EncodedClip, index: int, img_size: int) -> np.ndarray:
  frame = clip.frame(index)
  if frame.shape[0] != img_size:  # the original resized every frame to img_size (cv2 default, bilinear)
    frame = cv2.resize(frame, (img_size, img_size))
  return frame


def _interleave_channels(images: Sequence[np.ndarray], out: np.ndarray):
  """out[..., 3i:3i+3] = images[i], written in place by cv2.mixChannels (contiguous `out`).

  The same frame-major channel order as `windows.stack_on_channels` / the generator's channel concat; 5x
  faster than NumPy's strided assignment into interleaved channels (its inner loop runs over 3 bytes).
  """
  channels = sum(image.shape[-1] for image in images)
  cv2.mixChannels(list(images), [out], [c for c in range(channels) for _ in range(2)])


def write_expert_sample(plan: SamplePlan, img_size: int, batch: dict[str, np.ndarray], row: int):
  """faces = lower halves of the window at a (label 1) or b (label 0); mel = window at a."""
  start = plan.a if plan.label else plan.b
  lower_halves = [
    windows.lower_half(_frame(plan.clip, f, img_size)) for f in range(start, start + windows.SYNC_T)
  ]
  _interleave_channels(lower_halves, batch["faces"][row])  # == stack_on_channels(stack(lower_halves))
  batch["mel"][row] = _mel_window(plan.clip, plan.a)
  batch["label"][row] = float(plan.label)


def write_generator_sample(plan: SamplePlan, img_size: int, batch: dict[str, np.ndarray], row: int):
  """gt = window at a; inputs = [gt with the lower half zeroed | window at b]; mel at a; indiv at f-1."""
  gt, inputs = batch["gt"][row], batch["inputs"][row]
  for k in range(windows.SYNC_T):  # decode straight into the batch: no per-sample intermediate arrays
    gt[k] = _frame(plan.clip, plan.a + k, img_size)
    _interleave_channels([windows.mask_lower_half(gt[k]), _frame(plan.clip, plan.b + k, img_size)], inputs[k])
  batch["mel"][row] = _mel_window(plan.clip, plan.a)
  for k in range(windows.SYNC_T):
    batch["indiv_mels"][row, k] = _mel_window(plan.clip, plan.a + k - 1)


SAMPLE_WRITERS = {"expert": write_expert_sample, "generator": write_generator_sample}


def _corrupt_record(location: str, error: Exception) -> CorruptRecordError:
  return CorruptRecordError(
    f"{location}: {error}. Re-run preprocessing for this split, or move the shard out of the directory."
  )


class WindowPlanner(grain.transforms.RandomMap):
  """RawClip + per-index RNG -> SamplePlan of `mode` (parse the record, draw a, b and the label).

  A clip without room for a sample is skipped and counted: another clip of `fallback` (the global clip
  list) is drawn with the same per-index RNG, so the stream stays a pure function of (seed, index), the
  same in every process.
  """

  def __init__(self, mode: str, fallback: grain.MapDataset):
    if mode not in SAMPLE_WRITERS:
      raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    self.mode = mode
    self.fallback = fallback
    self.skipped = 0
    self._warned: set[str] = set()

  def __getstate__(self):
    return {k: v for k, v in self.__dict__.items() if k != "_warned"}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._warned = set()

  def random_map(self, element: RawClip, rng: np.random.Generator) -> SamplePlan:
    for _ in range(_MAX_RESAMPLES):
      try:
        clip = records.parse_example(element.data)
      except ValueError as e:
        raise _corrupt_record(element.location, e) from e
      bounds = window_start_range(clip.num_frames, clip.mel.shape[1], self.mode, clip.fps)
      if bounds is not None:
        return plan_sample(clip, element.location, self.mode, rng, bounds)
      self.skipped += 1
      if clip.clip_id not in self._warned:
        self._warned.add(clip.clip_id)
        logging.warning(
          "input_pipeline: skipping clip %s (%s): %d frames / %d mel steps leave no %s window "
          "(%d skipped draws so far in this process; write a shard index to drop such clips up front)",
          clip.clip_id,
          element.location,
          clip.num_frames,
          clip.mel.shape[1],
          self.mode,
          self.skipped,
        )
      element = self.fallback[int(rng.integers(len(self.fallback)))]
    raise ValueError(
      f"no usable clips for mode {self.mode!r}: {_MAX_RESAMPLES} draws in a row had fewer "
      f"than {MIN_CLIP_FRAMES} frames or too short a mel"
    )


class BatchAssembler:
  """grain batch_fn: SamplePlans -> one batch dict, decoding each sample's frames straight into it."""

  def __init__(self, mode: str, img_size: int):
    self.mode = mode
    self.img_size = img_size

  def __call__(self, plans: Sequence[SamplePlan]) -> dict[str, np.ndarray]:
    spec = element_spec(self.mode, len(plans), self.img_size)
    batch = {key: np.empty(shape, dtype) for key, (shape, dtype) in spec.items()}
    for row, plan in enumerate(plans):
      try:
        SAMPLE_WRITERS[self.mode](plan, self.img_size, batch, row)
      except ValueError as e:  # a frame that does not decode
        raise _corrupt_record(plan.location, e) from e
    return batch


def element_spec(mode: str, batch_size: int, img_size: int) -> dict[str, tuple[tuple[int, ...], Any]]:
  """{key: (shape, dtype)} of one batch of `mode` (for shape-only model init and tests)."""
  t, s = windows.SYNC_T, img_size
  mel = ((batch_size, windows.NUM_MELS, windows.MEL_STEPS, 1), np.float32)
  if mode == "expert":
    return {
      "faces": ((batch_size, s - s // 2, s, 3 * t), np.uint8),
      "mel": mel,  # rows S//2..S
      "label": ((batch_size, 1), np.float32),
    }
  if mode == "generator":
    return {
      "inputs": ((batch_size, t, s, s, 6), np.uint8),
      "gt": ((batch_size, t, s, s, 3), np.uint8),
      "indiv_mels": ((batch_size, t, windows.NUM_MELS, windows.MEL_STEPS, 1), np.float32),
      "mel": mel,
    }
  raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
