"""Costs for planning real runs: training FLOPs per sample, parameters, preprocessing cost and bytes, plans.

Owns the measurements and the assumptions behind docs/scaling.md:
- `train_flops_per_sample(stage, img_size, width_multiplier)`: XLA's cost analysis of the real jitted train
  step of a stage (lipsync_jax.training.stages, the function the train loop jits), compiled for the host
  CPU on abstract inputs (nothing is allocated or run). bench/device_check.py uses it for MFU.
- `param_counts()`, `allreduce_bytes_per_chip()`: parameters and the f32 gradient traffic of a step.
- `preprocess_cost(paths, img_size)`: CPU-seconds per clip and bytes per frame / per second of video of the
  real per-clip preprocessing (lipsync_jax.data.clips.process_clip + records.serialize_clip, what the Beam
  job runs); `cut_shots` / `face_centred_clips` turn a film clip into corpus-like single-shot clips.
- the planning constants (`DATASETS`, `SYSTEMS`, prices, `ASSUMED_MFU`, `PER_CHIP_BATCH`,
  `ORIGINAL_SCHEDULE`, `DATAFLOW`), each with its source, and `shard_plan` / `preprocess_plan` /
  `train_plan` / `data_plan` that combine them with the measurements.
- `main()`: measures, prints the tables and writes JSON:

  python bench/costs.py --media /tmp/media --out costs.json   # media: bench/real_footage/get_media.sh
  python bench/costs.py --skip_preprocess                      # FLOPs, memory and the training plan only
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lipsync_jax import windows
from lipsync_jax.training import stages

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))
from bench.accelerators import PEAK_BF16_FLOPS  # noqa: E402  (after the repository is on sys.path)
from configs import common  # noqa: E402  (the config schema, at the repository root)

STAGE_NAMES = ('expert', 'generator', 'gan')
# Per-sample FLOPs are the slope between two batch sizes, so the per-step part (Adam over the parameters,
# the global-norm metrics) is not counted per sample; it is reported as `fixed_flops_per_step`.
_SLOPE_BATCHES = (2, 4)


def stage_config(
  stage: str, img_size: int, width_multiplier: float = 1.0, compute_dtype: str = 'float32'
) -> ml_collections.ConfigDict:
  """The config schema (configs/common.py) for `stage` with every loss term on (sync weight > 0, the
  discriminator weight of the GAN stage), so the step counted is the one that runs for most of training.

  transpose_impl is 'direct': the HLO that GPUs and TPUs run (the 'phase' form is an XLA:CPU speed-up).
  """
  if stage not in STAGE_NAMES:
    raise ValueError(f'Unknown stage {stage!r}; choose one of {STAGE_NAMES}.')
  c = common.base_config(stage)
  c.model.update(dict(width_multiplier=float(width_multiplier), compute_dtype=compute_dtype))
  c.model.transpose_impl = 'direct'
  c.data.img_size = int(img_size)
  gan = stage == 'gan'
  c.loss.syncnet_wt_initial = 0.03 if gan else (0.01 if stage == 'generator' else 0.0)
  c.loss.disc_wt = 0.07 if gan else 0.0
  if gan:
    c.optimizer.b1 = 0.5
  return common.finalize(c)


def abstract_batch(stage: str, batch: int, img_size: int) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes and dtypes of one global batch as lipsync_jax.data.pipeline yields it (images uint8)."""
  s, t = int(img_size), windows.SYNC_T
  mel = jax.ShapeDtypeStruct((batch, windows.NUM_MELS, windows.MEL_STEPS, 1), jnp.float32)
  if stage == 'expert':
    return {
      'faces': jax.ShapeDtypeStruct((batch, s // 2, s, 3 * t), jnp.uint8),
      'mel': mel,
      'label': jax.ShapeDtypeStruct((batch, 1), jnp.float32),
    }
  return {
    'inputs': jax.ShapeDtypeStruct((batch, t, s, s, 6), jnp.uint8),
    'gt': jax.ShapeDtypeStruct((batch, t, s, s, 3), jnp.uint8),
    'indiv_mels': jax.ShapeDtypeStruct((batch, t, windows.NUM_MELS, windows.MEL_STEPS, 1), jnp.float32),
    'mel': mel,
  }


def abstract_step_inputs(
  stage: str, img_size: int, width_multiplier: float = 1.0, batch: int = 2, compute_dtype: str = 'float32'
) -> tuple[Any, dict[str, jax.ShapeDtypeStruct], Any]:
  """(state, batch, expert variables) of `stage`'s train step as ShapeDtypeStructs (jax.eval_shape of the
  real init functions: no parameter is allocated)."""
  config = stage_config(stage, img_size, width_multiplier, compute_dtype)
  state = jax.eval_shape(functools.partial(stages.get_stage(stage).init, config), jax.random.key(0))
  expert = None
  if stages.get_stage(stage).needs_expert:
    expert_config = stage_config('expert', img_size, width_multiplier, compute_dtype)
    expert = jax.eval_shape(
      functools.partial(stages.get_stage('expert').init, expert_config), jax.random.key(1)
    ).variables
  return state, abstract_batch(stage, batch, img_size), expert


def _count_device() -> jax.Device:
  """The device whose compiler counts the FLOPs: the host CPU when jax has it (so the count is the same on
  every machine and needs no accelerator time), else the default device (JAX_PLATFORMS without cpu)."""
  try:
    return jax.devices('cpu')[0]
  except RuntimeError:
    return jax.devices()[0]


def _on(device: jax.Device, tree: Any) -> Any:
  """ShapeDtypeStructs of `tree` placed on `device` (jit compiles for the backend of its inputs)."""
  sharding = jax.sharding.SingleDeviceSharding(device)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def _flops(cost: Any) -> float:
  """The 'flops' entry of a cost analysis (a dict, or a list of one dict per program in older jax)."""
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  flops = float((cost or {}).get('flops', 0.0))
  if flops <= 0:
    raise RuntimeError(f'XLA reported no FLOPs for this step (cost analysis: {cost!r}).')
  return flops


@functools.cache
def train_step_cost(
  stage: str, img_size: int, width_multiplier: float = 1.0, batch: int = 2, compiled: bool = True
) -> dict[str, float]:
  """XLA's cost of one train step of `stage` at global batch `batch` on one device (the host CPU's
  compiler when available, see `_count_device`): {'flops', 'temp_bytes'}.

  compiled=True counts the optimised HLO (`.lower(...).compile().cost_analysis()`, what runs; common
  subexpressions such as the discriminator's forward pass on the generated frames are counted once) and
  reads the compiled program's scratch memory (`memory_analysis().temp_size_in_bytes`: activations kept
  for the backward pass and workspace, CPU layout); compiled=False counts the HLO as traced
  (`.lower(...).cost_analysis()`, no compile: ~4x faster, a few % off) and gives no temp_bytes.
  Cached per argument tuple (returns the same dict: do not modify it).
  """
  try:
    inputs = abstract_step_inputs(stage, img_size, width_multiplier, batch)
    step = jax.jit(stages.get_stage(stage).train_step)
    lowered = step.lower(*_on(_count_device(), inputs))
  except (ValueError, TypeError) as err:
    if img_size == 96:
      raise
    raise ValueError(
      f'The {stage} stage\'s networks do not run at img_size={img_size}: lipsync_jax.models defines them '
      f'for face sizes 96, 192, 288 (SUPPORTED_FACE_SIZES); use one of those. ({type(err).__name__}: {err})'
    ) from err
  if not compiled:
    return {'flops': _flops(lowered.cost_analysis()), 'temp_bytes': float('nan')}
  program = lowered.compile()
  memory = program.memory_analysis()
  temp = float(getattr(memory, 'temp_size_in_bytes', float('nan'))) if memory is not None else float('nan')
  return {'flops': _flops(program.cost_analysis()), 'temp_bytes': temp}


def train_step_flops(
  stage: str, img_size: int, width_multiplier: float = 1.0, batch: int = 2, compiled: bool = True
) -> float:
  """XLA FLOPs of one train step of `stage` at global batch `batch` (see `train_step_cost`)."""
  return train_step_cost(stage, img_size, width_multiplier, batch, compiled)['flops']


@functools.cache
def step_cost_slopes(
  stage: str, img_size: int, width_multiplier: float = 1.0, compiled: bool = True
) -> dict[str, float]:
  """Per-sample and per-step parts of a train step's cost, from the step at batch 2 and 4 (compiled, or as
  traced with compiled=False; see `train_step_cost`):
  {'flops_per_sample', 'fixed_flops_per_step', 'temp_bytes_per_sample', 'fixed_temp_bytes'}."""
  b1, b2 = _SLOPE_BATCHES
  c1 = train_step_cost(stage, int(img_size), float(width_multiplier), b1, compiled)
  c2 = train_step_cost(stage, int(img_size), float(width_multiplier), b2, compiled)
  flops = (c2['flops'] - c1['flops']) / (b2 - b1)
  temp = (c2['temp_bytes'] - c1['temp_bytes']) / (b2 - b1)
  return {
    'flops_per_sample': flops,
    'fixed_flops_per_step': c1['flops'] - b1 * flops,
    'temp_bytes_per_sample': temp,
    'fixed_temp_bytes': c1['temp_bytes'] - b1 * temp,
  }


def train_flops_per_sample(
  stage: str, img_size: int, width_multiplier: float = 1.0, *, compiled: bool = True
) -> float:
  """Training FLOPs per sample of `stage` ('expert' | 'generator' | 'gan') at `img_size`, from XLA's cost
  analysis of the real jitted train step (`lipsync_jax.training.stages.get_stage(stage).train_step`,
  compiled on abstract inputs for the default backend; nothing runs).

  A sample is one row of the global batch: for 'expert' one 5-frame window of lower-half faces + its mel,
  for 'generator' / 'gan' one 5-frame window (5 generated frames; the frozen expert's forward and backward
  through it, and for 'gan' the discriminator on 5 real + 5 generated frames, G and D steps). Every loss
  term is on (sync weight > 0). The value is the slope of the step's FLOPs between batch 2 and 4, so the
  per-step optimizer update is excluded (see `fixed_flops_per_step`); multiply by the global batch for
  the model FLOPs of a step (MFU = that / step time / peak FLOP/s of all chips).

  FLOPs count one multiply-add as 2, at width_multiplier 1 in float32 (bfloat16 compute gives the same
  count). Raises ValueError when the networks do not exist at `img_size` (they are defined for 96 only).
  Results are cached per (stage, img_size, width_multiplier). Full size takes about a minute per stage on
  a busy 2-core CPU (two compiles); compiled=False counts the traced HLO instead (no compile, ~4x faster;
  measured within 6 % of the compiled count: +0.6 % expert, -0.5 % generator, +5.4 % gan, where the
  compiler merges the two discriminator passes over the generated frames).
  """
  return step_cost_slopes(stage, int(img_size), float(width_multiplier), compiled)['flops_per_sample']


def fixed_flops_per_step(stage: str, img_size: int, width_multiplier: float = 1.0) -> float:
  """The FLOPs of a train step that do not grow with the batch (optimizer update, norms), same source."""
  return step_cost_slopes(stage, int(img_size), float(width_multiplier))['fixed_flops_per_step']


# ------------------------------------------------------------------------------------------------------
# Parameters and gradient traffic
# ------------------------------------------------------------------------------------------------------


def param_counts(img_size: int = 96, width_multiplier: float = 1.0) -> dict[str, int]:
  """Trainable parameters of each network ({'expert', 'generator', 'disc'}), from the real stage inits
  (jax.eval_shape: nothing allocated). BatchNorm running statistics are not parameters (no gradient)."""

  def count(tree) -> int:
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))

  expert = jax.eval_shape(
    functools.partial(stages.expert_init, stage_config('expert', img_size, width_multiplier)),
    jax.random.key(0),
  )
  gan = jax.eval_shape(
    functools.partial(stages.gan_init, stage_config('gan', img_size, width_multiplier)), jax.random.key(0)
  )
  return {'expert': count(expert.params), 'generator': count(gan.params), 'disc': count(gan.disc_params)}


def trained_params(stage: str, counts: dict[str, int]) -> int:
  """Parameters whose gradients a step of `stage` all-reduces (the frozen expert has none)."""
  return {'expert': counts['expert'], 'generator': counts['generator']}.get(
    stage, counts['generator'] + counts['disc']
  )


def allreduce_bytes_per_chip(num_params: int, num_chips: int, bytes_per_value: int = 4) -> float:
  """Bytes each chip sends (and receives) to all-reduce float32 gradients of `num_params` over `num_chips`
  with a ring (reduce-scatter + all-gather): 2 (n - 1) / n x the gradient bytes."""
  if num_chips < 2:
    return 0.0
  return 2.0 * (num_chips - 1) / num_chips * num_params * bytes_per_value


# ------------------------------------------------------------------------------------------------------
# Preprocessing: CPU-seconds and bytes per clip (the real per-clip function of the Beam job)
# ------------------------------------------------------------------------------------------------------


def preprocess_cost(
  paths: Sequence[str], img_size: int, detector: str = '', jpeg_quality: int = 95, warmup: bool = True
) -> dict[str, Any]:
  """Runs lipsync_jax.data.clips.process_clip + records.serialize_clip (what data_pipelines.preprocess
  runs per clip) on `paths` in this process, one clip at a time, and sums the cost.

  CPU-seconds are `time.process_time()` (all threads of this process: the JAX face detector is
  multi-threaded). The first clip is processed once untimed when `warmup` (the detector's jit compile,
  paid once per worker). Frame bytes are the JPEG frames alone; record bytes the whole tf.train.Example
  (frames + float32 mel + boxes + ids). Skipped clips are counted, not timed into the totals.
  """
  from lipsync_jax.data import clips, records

  config = clips.PreprocessConfig(
    img_size=int(img_size), jpeg_quality=int(jpeg_quality), **({'detector': detector} if detector else {})
  )
  face_detector = config.make_detector()
  tasks = [clips.ClipTask('train', pathlib.Path(p).stem, str(p)) for p in paths]
  if warmup and tasks:
    clips.process_to_record(tasks[0], config, face_detector)
  totals = dict(clips=0, skipped=0, frames=0, cpu_s=0.0, wall_s=0.0, frame_bytes=0, record_bytes=0)
  for task in tasks:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
      clip, _ = clips.process_clip(task, config, face_detector)
    except clips.SkipClip:
      totals['skipped'] += 1
      continue
    record = records.serialize_clip(clip, config.frame_format, config.jpeg_quality)
    totals['cpu_s'] += time.process_time() - cpu0
    totals['wall_s'] += time.perf_counter() - wall0
    totals['clips'] += 1
    totals['frames'] += len(clip.frames)
    totals['record_bytes'] += len(record)
    totals['frame_bytes'] += sum(map(len, records.encode_frames(clip.frames, 'jpeg', config.jpeg_quality)))
  frames, seconds = totals['frames'], totals['frames'] / windows.FPS
  totals.update(
    img_size=int(img_size),
    detector=config.detector,
    jpeg_quality=int(jpeg_quality),
    seconds=seconds,
    cpu_s_per_clip=totals['cpu_s'] / max(totals['clips'], 1),
    cpu_s_per_video_s=totals['cpu_s'] / seconds if seconds else 0.0,
    frame_bytes_per_frame=totals['frame_bytes'] / frames if frames else 0.0,
    record_bytes_per_video_s=totals['record_bytes'] / seconds if seconds else 0.0,
  )
  return totals


def jpeg_bytes_of_photos(paths: Sequence[str], img_sizes: Sequence[int], jpeg_quality: int = 95) -> dict:
  """JPEG bytes of the face crop of each still photo at each size, through the same crop as
  preprocessing (default detector, THE face track's pads, lipsync_jax.media.track.crop_and_resize)."""
  import cv2

  from lipsync_jax.data import clips, records
  from lipsync_jax.media import track

  face_detector = clips.PreprocessConfig().make_detector()
  out: dict[str, dict[int, int]] = {}
  for path in paths:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
      raise ValueError(f'{path}: not an image OpenCV can read; pass photos (jpg/png) to --photos.')
    h, w = image.shape[:2]
    boxes, _ = track.track_boxes([face_detector.detect_faces([image])[0]], w, h)
    if boxes[0] is None:
      continue
    crops = {s: track.crop_and_resize(image, np.asarray(boxes[0]), s) for s in img_sizes}
    out[pathlib.Path(path).name] = {
      s: len(records.encode_frames(crop[None], 'jpeg', jpeg_quality)[0]) for s, crop in crops.items()
    }
  return out


def cut_shots(path: str, shots: Sequence[tuple[int, int]], out_dir: str) -> list[str]:
  """Writes frames [start, stop) of `path` (at its native rate) as separate 25 fps H.264 + AAC clips
  (lipsync_jax.media.video.VideoWriter, crf 18), with the audio of the same span; returns their paths.
  Used to turn a film excerpt with scene cuts into single-shot clips like a corpus's."""
  from lipsync_jax.media import video

  frames, fps = video.read_frames(path)
  wav = video.read_audio(path, sr=16000)
  out = []
  pathlib.Path(out_dir).mkdir(parents=True, exist_ok=True)
  for start, stop in shots:
    target = str(pathlib.Path(out_dir) / f'{pathlib.Path(path).stem}_{start:04d}_{stop:04d}.mp4')
    h, w = frames.shape[1:3]
    with video.VideoWriter(target, windows.FPS, w, h) as writer:
      for frame in frames[start:stop]:
        writer.write(frame)
      a, b = int(start / fps * 16000), int(start / fps * 16000 + (stop - start) / windows.FPS * 16000)
      writer.close(audio=wav[a:b], sample_rate=16000)
    out.append(target)
  return out


def face_centred_clips(paths: Sequence[str], size: int, out_dir: str, margin: float = 1.8) -> list[str]:
  """Writes each clip as a face-centred size x size video, the way corpora such as LRS2 (160 px) and
  VoxCeleb2 (224 px) ship their clips: one fixed square per clip, `margin` x the median tracked face box
  (default detector, THE face track), around the median box centre. Lets real footage be measured at a
  corpus's own resolution (JPEG size at 192/288 px depends on how much detail the source has)."""
  import cv2

  from lipsync_jax.data import clips
  from lipsync_jax.media import track, video

  face_detector = clips.PreprocessConfig().make_detector()
  out = []
  pathlib.Path(out_dir).mkdir(parents=True, exist_ok=True)
  for path in paths:
    frames, fps = video.read_frames(path)
    h, w = frames.shape[1:3]
    boxes, _ = track.track_boxes(face_detector.detect_faces(list(frames)), w, h)
    found = np.array([b for b in boxes if b is not None], np.float64)
    x1, y1, x2, y2 = np.median(found, axis=0)
    cx, cy, side = (x1 + x2) / 2, (y1 + y2) / 2, margin * max(x2 - x1, y2 - y1)
    box = np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]).round().astype(int)
    pad = int(max(0, -box[0], -box[1], box[2] - w, box[3] - h))
    target = str(pathlib.Path(out_dir) / f'{pathlib.Path(path).stem}_{size}px.mp4')
    with video.VideoWriter(target, fps, size, size) as writer:
      for frame in frames:
        framed = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else frame
        writer.write(track.crop_and_resize(framed, box + pad, size))
      writer.close(audio=video.read_audio(path, sr=16000), sample_rate=16000)
    out.append(target)
  return out


# ------------------------------------------------------------------------------------------------------
# Planning: datasets, accelerators, prices (every constant says where it comes from)
# ------------------------------------------------------------------------------------------------------

# Public dataset statistics. LRS2-BBC: Afouras, Chung, Senior, Vinyals, Zisserman, "Deep Audio-Visual
# Speech Recognition" (TPAMI 2018), restated in Table 1 of the LRS3-TED paper (arXiv 1809.00496): pre-train
# 96k utterances / 195 h, train-val 47k / 29 h, test 1,243 / 0.5 h; videos 160x160, 25 fps. Wav2Lip trains
# on the train-val part ("main", filelists train.txt + val.txt). VoxCeleb2: Chung, Nagrani, Zisserman,
# "VoxCeleb2: Deep Speaker Recognition" (Interspeech 2018, arXiv 1806.05622): 1,128,246 utterances,
# 2,442 h, 6,112 speakers; face-centred 224x224 clips at 25 fps.
DATASETS = {
  'LRS2 main (train+val)': {'hours': 29.0, 'clips': 47_000, 'source_px': 160},
  'LRS2 pretrain': {'hours': 195.0, 'clips': 96_000, 'source_px': 160},
  'VoxCeleb2 (dev+test)': {'hours': 2442.0, 'clips': 1_128_246, 'source_px': 224},
}
CLIPS_PER_SHARD = 128  # lipsync_jax.data.dataset_info.shards_per_split default (data_pipelines.preprocess)

# The original's schedule (/work/shared/WAV2LIP_REFERENCE.md section 7: generator ~250k steps at batch 16,
# GAN 258k at batch 16; expert batch 64, whose step count the paper does not state: configs/expert.py's
# num_train_steps, 500k, is used).
ORIGINAL_SCHEDULE = {
  'expert': {'steps': 500_000, 'batch': 64},
  'generator': {'steps': 250_000, 'batch': 16},
  'gan': {'steps': 258_000, 'batch': 16},
}

# Accelerator systems. Peak dense bf16 FLOP/s per chip and inter-chip bandwidth from the vendors' pages:
# TPU v5e https://cloud.google.com/tpu/docs/v5e (197 TFLOP/s, ICI 400 GB/s bidirectional per chip);
# TPU v5p https://cloud.google.com/tpu/docs/v5p (459 TFLOP/s, ICI 1,200 GB/s bidirectional per chip;
# "v5p-128" counts TensorCores: 64 chips, 2 per chip); H100 SXM https://www.nvidia.com/en-us/data-center/h100/
# (989 TFLOP/s dense bf16, 1,979 with sparsity; NVLink 900 GB/s bidirectional). `link_Bps` is one
# direction (half the bidirectional figure), what one chip can push into a ring all-reduce.
# Prices (USD per chip-hour, on-demand list, US regions) are ASSUMPTIONS as known in 2025, not fetched
# here; re-check https://cloud.google.com/tpu/pricing and https://cloud.google.com/compute/gpus-pricing
# before budgeting: v5e $1.20, v5p $4.20, H100 (a3-highgpu-8g, about $88/h for 8) $11.00.
SYSTEMS = {
  'v5e-64': {
    'chips': 64,
    'peak': PEAK_BF16_FLOPS['TPU v5e'],
    'link_Bps': 200e9,
    'hbm': 16e9,
    'usd_chip_h': 1.20,
  },
  'v5p-128': {
    'chips': 64,
    'peak': PEAK_BF16_FLOPS['TPU v5p'],
    'link_Bps': 600e9,
    'hbm': 95e9,
    'usd_chip_h': 4.20,
  },
  '8xH100': {
    'chips': 8,
    'peak': PEAK_BF16_FLOPS['H100'],
    'link_Bps': 450e9,
    'hbm': 80e9,
    'usd_chip_h': 11.00,
  },
}
ASSUMED_MFU = 0.25  # assumed model-FLOP utilisation in bfloat16 (replace with a measured one)
# Rows of the global batch per chip: enough work per step for a 96 px convnet to fill a chip; the stage's
# measured activation memory (temp_bytes_per_sample, CPU layout, float32) must fit in half the HBM.
PER_CHIP_BATCH = {'expert': 32, 'generator': 8, 'gan': 8}

# Dataflow batch prices from apache_beam/testing/load_tests/dataflow_cost_consts.py (apache-beam 2.77.0):
# $0.056 per vCPU-hour, $0.003557 per GB-hour of memory, $0.000054 per GB-hour of persistent disk.
# Worker assumed: n2-standard-16 (16 vCPU, 64 GB), 250 GB persistent disk.
DATAFLOW = {
  'vcpu_h': 0.056,
  'mem_gb_h': 0.003557,
  'pd_gb_h': 0.000054,
  'vcpus': 16,
  'mem_gb': 64,
  'pd_gb': 250,
}


def dataflow_usd_per_worker_hour(d: dict = DATAFLOW) -> float:
  return d['vcpus'] * d['vcpu_h'] + d['mem_gb'] * d['mem_gb_h'] + d['pd_gb'] * d['pd_gb_h']


def shard_plan(bytes_per_video_s: float, hours: float, clips: int) -> dict[str, float]:
  """Total bytes, shard count (clips_per_shard 128) and mean shard size of a corpus."""
  total = bytes_per_video_s * hours * 3600.0
  shards = max(1, -(-int(clips) // CLIPS_PER_SHARD))
  return {'total_bytes': total, 'shards': shards, 'shard_bytes': total / shards}


def preprocess_plan(cpu_s_per_video_s: float, hours: float, workers: int = 50) -> dict[str, float]:
  """CPU-hours, Dataflow cost and wall time on `workers` n2-standard-16 workers (all vCPUs busy)."""
  cpu_h = cpu_s_per_video_s * hours
  worker_h = cpu_h / DATAFLOW['vcpus']
  return {
    'cpu_hours': cpu_h,
    'usd': worker_h * dataflow_usd_per_worker_hour(),
    'wall_hours': worker_h / workers,
    'workers': workers,
  }


def train_plan(stage: str, system: str, flops_per_sample: float, counts: dict[str, int]) -> dict[str, float]:
  """Global batch, step time (compute at ASSUMED_MFU + a non-overlapped ring all-reduce of f32 gradients),
  and time and cost to the original's number of samples (ORIGINAL_SCHEDULE steps x batch)."""
  sysd = SYSTEMS[system]
  chips = sysd['chips']
  batch = PER_CHIP_BATCH[stage] * chips
  compute_s = flops_per_sample * PER_CHIP_BATCH[stage] / (sysd['peak'] * ASSUMED_MFU)
  ar_bytes = allreduce_bytes_per_chip(trained_params(stage, counts), chips)
  ar_s = ar_bytes / sysd['link_Bps']
  original = ORIGINAL_SCHEDULE[stage]
  samples = original['steps'] * original['batch']
  steps = -(-samples // batch)
  hours = steps * (compute_s + ar_s) / 3600.0
  return {
    'chips': chips,
    'global_batch': batch,
    'per_chip_batch': PER_CHIP_BATCH[stage],
    'step_compute_s': compute_s,
    'allreduce_bytes_per_chip': ar_bytes,
    'allreduce_s': ar_s,
    'steps': steps,
    'hours': hours,
    'usd': hours * chips * sysd['usd_chip_h'],
  }


def data_plan(preprocess: dict[str, dict], sources: dict[str, str]) -> dict[str, dict]:
  """Shards and preprocessing cost of each dataset at each size, from the measured bytes and CPU-seconds
  per second of video of `sources[dataset]` (a key prefix of `preprocess`, e.g. real footage framed at
  the dataset's own resolution)."""
  plan = {}
  for dataset, spec in DATASETS.items():
    for size in IMG_SIZES:
      measured = preprocess[f'{sources[dataset]}@{size}']
      plan[f'{dataset}@{size}'] = {
        'measured_on': sources[dataset],
        **shard_plan(measured['record_bytes_per_video_s'], spec['hours'], spec['clips']),
        **preprocess_plan(measured['cpu_s_per_video_s'], spec['hours']),
      }
  return plan


# ------------------------------------------------------------------------------------------------------
# main: measure, print, write JSON
# ------------------------------------------------------------------------------------------------------

IMG_SIZES = (96, 192, 288)
MEGAMIND = '/usr/share/doc/opencv-doc/examples/data/Megamind.avi'
MEGAMIND_SHOTS = ((1, 98), (98, 154), (154, 200), (200, 270))  # its 4 hard cuts (bench/real_footage)


def _demo_clip_paths(num: int) -> list[str]:
  from lipsync_jax.data import demo, synthetic

  raw, _ = demo.demo_paths(num_clips=num)
  if not pathlib.Path(raw, 'train.txt').exists():
    synthetic.make_corpus(raw, num_clips=num, seed=0)
  return sorted(str(p) for p in pathlib.Path(raw).glob('*/*.mp4'))


def _g(x: float) -> str:
  return f'{x / 1e9:,.1f}'


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', default='', help='write every figure as JSON here')
  parser.add_argument('--skip_flops', action='store_true')
  parser.add_argument('--skip_preprocess', action='store_true')
  parser.add_argument('--demo_clips', type=int, default=120, help='demo corpus size (clips measured: all)')
  parser.add_argument('--max_clips', type=int, default=24, help='clips of each source measured')
  parser.add_argument('--media', default='', help='folder of bench/real_footage/get_media.sh (photos)')
  parser.add_argument('--work', default='/tmp/lipsync_costs', help='scratch folder for derived clips')
  args = parser.parse_args(argv)
  results: dict[str, Any] = {
    'assumptions': {
      'datasets': DATASETS,
      'systems': SYSTEMS,
      'mfu': ASSUMED_MFU,
      'per_chip_batch': PER_CHIP_BATCH,
      'original_schedule': ORIGINAL_SCHEDULE,
      'dataflow': DATAFLOW,
      'clips_per_shard': CLIPS_PER_SHARD,
    }
  }
  counts = param_counts()
  results['params'] = counts
  print('parameters: ' + ', '.join(f'{k} {v:,}' for k, v in counts.items()))

  if not args.skip_flops:
    print('\ntrain step, XLA cost analysis (CPU compiler, float32, transpose_impl=direct), per sample:')
    results['train'] = {}
    for stage in STAGE_NAMES:
      for size in IMG_SIZES:
        start = time.perf_counter()
        try:
          cost = step_cost_slopes(stage, size, 1.0)
        except ValueError as err:
          results['train'][f'{stage}@{size}'] = {'error': str(err).split(' (')[0]}
          print(f'  {stage:9s} {size:3d} px  not available: the networks are defined for 96 px only')
          continue
        results['train'][f'{stage}@{size}'] = cost
        print(
          f'  {stage:9s} {size:3d} px  {_g(cost["flops_per_sample"])} GFLOP/sample  '
          f'fixed {_g(cost["fixed_flops_per_step"])} GFLOP/step  '
          f'activations {cost["temp_bytes_per_sample"] / 2**20:,.0f} MiB/sample  '
          f'({time.perf_counter() - start:.0f} s)'
        )
    results['plan_train'] = {}
    print(f'\ntraining plan at 96 px (assumed MFU {ASSUMED_MFU:.0%}, bf16; all-reduce not overlapped):')
    for stage in STAGE_NAMES:
      fps = results['train'][f'{stage}@96']['flops_per_sample']
      for system in SYSTEMS:
        plan = train_plan(stage, system, fps, counts)
        results['plan_train'][f'{stage}@{system}'] = plan
        print(
          f'  {stage:9s} {system:8s} batch {plan["global_batch"]:5d}  step {plan["step_compute_s"] * 1e3:6.1f} ms'
          f' + all-reduce {plan["allreduce_bytes_per_chip"] / 2**20:5.0f} MiB {plan["allreduce_s"] * 1e3:5.2f} ms'
          f'  {plan["steps"]:7,d} steps  {plan["hours"]:6.2f} h  ${plan["usd"]:,.0f}'
        )

  if not args.skip_preprocess:
    work = pathlib.Path(args.work)
    sources = {'demo (synthetic, 160 px)': _demo_clip_paths(args.demo_clips)[: args.max_clips]}
    if pathlib.Path(MEGAMIND).exists():
      shots = cut_shots(MEGAMIND, MEGAMIND_SHOTS, str(work / 'shots'))
      sources['Megamind shots (720x528)'] = shots
      for px in (160, 224):
        sources[f'Megamind face-centred {px} px'] = face_centred_clips(shots, px, str(work / f'fc{px}'))
    results['preprocess'] = {}
    print('\npreprocessing (process_clip + serialize_clip, one clip at a time, this machine):')
    for name, paths in sources.items():
      for size in IMG_SIZES:
        cost = preprocess_cost(paths, size)
        results['preprocess'][f'{name}@{size}'] = cost
        print(
          f'  {name:30s} {size:3d} px  {cost["clips"]:3d} clips {cost["seconds"]:6.1f} s  '
          f'{cost["cpu_s_per_clip"]:5.2f} CPU-s/clip  {cost["cpu_s_per_video_s"]:.3f} CPU-s per video-s  '
          f'{cost["frame_bytes_per_frame"]:7,.0f} B/frame  {cost["record_bytes_per_video_s"] / 1e3:6.1f} kB/s'
        )
    fc = {160: 'Megamind face-centred 160 px', 224: 'Megamind face-centred 224 px'}
    matched = {d: fc.get(spec['source_px'], 'demo (synthetic, 160 px)') for d, spec in DATASETS.items()}
    if not all(f'{m}@96' in results['preprocess'] for m in matched.values()):
      matched = {d: 'demo (synthetic, 160 px)' for d in DATASETS}
    results['plan_data'] = data_plan(results['preprocess'], matched)
    print(
      f'\ndata plan ({CLIPS_PER_SHARD} clips per shard; Dataflow n2-standard-16 at '
      f'${dataflow_usd_per_worker_hour():.3f}/worker-hour, 50 workers):'
    )
    for key, plan in results['plan_data'].items():
      print(
        f'  {key:28s} {plan["total_bytes"] / 1e9:8.1f} GB  {plan["shards"]:5,d} shards of '
        f'{plan["shard_bytes"] / 2**20:6.1f} MiB  {plan["cpu_hours"]:7.1f} CPU-h  ${plan["usd"]:7.2f}  '
        f'{plan["wall_hours"] * 60:5.1f} min  (measured on {plan["measured_on"]})'
      )
    if args.media:
      photos = [p for p in sorted(pathlib.Path(args.media).iterdir()) if p.suffix in ('.jpg', '.png')]
      results['photos_jpeg_bytes'] = jpeg_bytes_of_photos(photos, IMG_SIZES)
      for name, sizes in results['photos_jpeg_bytes'].items():
        print(f'  photo {name:24s} ' + '  '.join(f'{s} px {b:,} B' for s, b in sizes.items()))
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(results, indent=2, default=float))
    print(f'\nwrote {args.out}')


if __name__ == '__main__':
  main()
