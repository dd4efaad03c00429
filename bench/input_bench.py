"""Input pipeline throughput: samples/s per core for the expert and generator modes.

Owns: the figure for issue 3 item 4. Goal: 10x the original Wav2Lip loader's ~92 generator samples/s per
core, i.e. >= 920 samples/s/core.

  python bench/input_bench.py                      # builds a corpus of 5 s clips of 96 px JPEG crops
  python bench/input_bench.py --shards DIR         # e.g. the demo corpus shards (split --split)

Runs, per mode: one process computing batches synchronously (no threads), one process with prefetch
threads, and grain worker processes. "Per core" = samples per CPU-second used by this process and its
workers (user + system time), which stays meaningful on a shared machine where wall-clock rates depend on
the other load (printed as the load average); the wall-clock rate is printed next to it. Also measures
what float32 batches would cost instead of uint8 (host conversion, bytes, host->device transfer +
conversion on the device).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import cv2
import numpy as np

from lipsync_jax import windows
from lipsync_jax.data import pipeline as input_pipeline
from lipsync_jax.data import records, tfrecord

ORIGINAL_SAMPLES_PER_S_PER_CORE = 92.0


def random_face_like_frames(rng: np.random.Generator, num_frames: int, img_size: int) -> np.ndarray:
  """Random frames with image-like statistics: a smooth random field per clip that drifts per frame, plus
  fine noise (pure white noise would make JPEGs ~2x larger and slower to decode than face crops)."""
  base = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8).astype(np.float32)
  frames = []
  for _ in range(num_frames):
    base = np.clip(base + rng.normal(0, 6, base.shape), 0, 255)
    frame = cv2.resize(base, (img_size, img_size), interpolation=cv2.INTER_CUBIC)
    frames.append(np.clip(frame + rng.normal(0, 4, frame.shape), 0, 255).astype(np.uint8))
  return np.stack(frames)


def build_corpus(
  out_dir: str,
  num_clips: int,
  seconds: float,
  img_size: int,
  num_shards: int,
  jpeg_quality: int,
  split: str = "train",
  frame_format: str = "jpeg",
) -> str:
  rng = np.random.default_rng(0)
  num_frames = int(round(seconds * windows.FPS))
  mel_steps = int(windows.MEL_STEPS_PER_SECOND * seconds) + 1
  clips = []
  for i in range(num_clips):
    clip = records.Clip(
      f"bench/{i:05d}",
      split,
      random_face_like_frames(rng, num_frames, img_size),
      rng.normal(-2, 1, (windows.NUM_MELS, mel_steps)).astype(np.float32),
      np.zeros((num_frames, 4)),
    )
    clips.append(records.serialize_clip(clip, frame_format, jpeg_quality))
  for shard in range(num_shards):
    tfrecord.write_tfrecord(
      os.path.join(out_dir, records.shard_name(split, shard, num_shards)), clips[shard::num_shards]
    )
  size = sum(len(c) for c in clips)
  what = f"JPEG q{jpeg_quality}" if frame_format == "jpeg" else "raw"
  print(
    f"built {num_clips} clips x {num_frames} frames ({img_size} px {what}) in "
    f"{num_shards} shards: {size / 1e6:.1f} MB, {size / num_clips / 1e3:.0f} KB per clip"
  )
  return out_dir


def cpu_seconds() -> float:
  """User + system CPU time of this process and its live children (grain workers)."""
  try:
    import psutil  # pylint: disable=import-outside-toplevel
  except ImportError:
    return time.process_time()
  total = 0.0
  process = psutil.Process()
  for p in [process] + process.children(recursive=True):
    try:
      times = p.cpu_times()
      total += times.user + times.system
    except psutil.Error:
      pass
  return total


def time_iterator(iterator, batch_size: int, seconds: float, warmup_batches: int) -> tuple[float, float]:
  """(samples per wall second, samples per CPU second of this process and its workers)."""
  for _ in range(warmup_batches):
    next(iterator)
  count, start, start_cpu = 0, time.perf_counter(), cpu_seconds()
  while time.perf_counter() - start < seconds:
    next(iterator)
    count += batch_size
  return count / (time.perf_counter() - start), count / (cpu_seconds() - start_cpu)


def measure_dtype_choice(iterator, mode: str, repeats: int = 20):
  """uint8 batches converted on device vs float32 batches converted on the host."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  batch = next(iterator)
  image_keys = [k for k, v in batch.items() if v.dtype == np.uint8]

  def host_to_float(b):
    return {k: (v.astype(np.float32) * np.float32(1 / 255) if k in image_keys else v) for k, v in b.items()}

  on_device_to_float = jax.jit(
    lambda b: {k: (v.astype(jnp.float32) / 255 if k in image_keys else v) for k, v in b.items()}
  )
  jax.block_until_ready(on_device_to_float(jax.device_put(batch)))  # compile

  def best(fn):
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      jax.block_until_ready(fn())
      times.append(time.perf_counter() - start)
    return min(times) * 1e3

  host_ms = best(lambda: host_to_float(batch))
  float_batch = host_to_float(batch)
  put_u8_ms = best(lambda: on_device_to_float(jax.device_put(batch)))
  put_f32_ms = best(lambda: jax.device_put(float_batch))
  u8_bytes = sum(v.nbytes for v in batch.values())
  f32_bytes = sum(v.nbytes for v in float_batch.values())
  b = len(next(iter(batch.values())))
  print(
    f"  [{mode}] batch bytes uint8 {u8_bytes / 1e6:.2f} MB vs float32 {f32_bytes / 1e6:.2f} MB; "
    f"host float conversion {host_ms:.2f} ms/batch ({host_ms * 1e3 / b:.0f} us/sample); "
    f"on {jax.default_backend()}: put uint8 + convert on device {put_u8_ms:.2f} ms, "
    f"put float32 {put_f32_ms:.2f} ms (+ the host conversion)"
  )


def calibration(shards_dir: str, split: str) -> str:
  """How long this machine, right now, takes for the fixed costs of one record (to compare runs)."""
  source = tfrecord.ClipRecords(tfrecord.find_shards(shards_dir, split))
  raw = source[0].data
  clip = records.parse_example(raw)

  def cpu_us(fn, repeats=300):
    fn()
    start = time.process_time()
    for _ in range(repeats):
      fn()
    return (time.process_time() - start) / repeats * 1e6

  parse_us = cpu_us(lambda: records.parse_example(raw))
  decode_us = cpu_us(lambda: clip.frame(0))
  return (
    f"calibration (CPU time): parse one {len(raw) / 1e3:.0f} KB record {parse_us:.0f} us, decode one "
    f"{clip.img_size} px frame {decode_us:.0f} us"
  )


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--shards", help="shards directory (default: build a corpus in a temp dir)")
  parser.add_argument("--split", default="train")
  parser.add_argument("--modes", default="generator,expert")
  parser.add_argument("--batch_size", type=int, default=16, help="per-process batch")
  parser.add_argument("--seconds", type=float, default=6.0, help="measuring time per configuration")
  parser.add_argument("--workers", default="0,2", help="comma list of grain worker process counts")
  parser.add_argument("--threads", type=int, default=2, help="prefetch threads for the threaded run")
  parser.add_argument("--clips", type=int, default=48)
  parser.add_argument("--clip_seconds", type=float, default=5.0)
  parser.add_argument("--img_size", type=int, default=96)
  parser.add_argument("--jpeg_quality", type=int, default=95)
  parser.add_argument("--frame_format", default="jpeg", choices=records.FRAME_FORMATS)
  parser.add_argument("--no_dtype", action="store_true", help="skip the uint8 vs float32 measurement")
  args = parser.parse_args(argv)

  cv2.setNumThreads(1)
  tmp = None
  shards_dir = args.shards
  if not shards_dir:
    tmp = tempfile.TemporaryDirectory(prefix="input_bench_")
    shards_dir = build_corpus(
      tmp.name,
      args.clips,
      args.clip_seconds,
      args.img_size,
      num_shards=4,
      jpeg_quality=args.jpeg_quality,
      split=args.split,
      frame_format=args.frame_format,
    )
  print(f"cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
  print(calibration(shards_dir, args.split))
  results = {}
  for mode in args.modes.split(","):

    def make(mode=mode, **kwargs):
      return input_pipeline.make_train_iterator(
        shards_dir, args.split, mode, args.batch_size, seed=0, process_index=0, process_count=1, **kwargs
      )

    results[(mode, "1 process, synchronous")] = time_iterator(
      make(num_threads=0), args.batch_size, args.seconds, warmup_batches=2
    )
    results[(mode, f"1 process, {args.threads} threads")] = time_iterator(
      make(num_threads=args.threads), args.batch_size, args.seconds, warmup_batches=2
    )
    for workers in [int(w) for w in args.workers.split(",") if int(w) > 0]:
      iterator = make(num_threads=1, worker_count=workers)
      results[(mode, f"{workers} worker processes")] = time_iterator(
        iterator, args.batch_size, args.seconds, warmup_batches=4 * workers
      )
      iterator.close()
    for (m, config), (wall_rate, per_core) in results.items():
      if m == mode:
        print(
          f"  [{mode}] {config:26s} {wall_rate:7.0f} samples/s wall, {per_core:6.0f} samples per "
          f"CPU-second = per core ({per_core / ORIGINAL_SAMPLES_PER_S_PER_CORE:.1f}x the original's 92)"
        )
    if not args.no_dtype:
      measure_dtype_choice(make(num_threads=0), mode)
  print(calibration(shards_dir, args.split))
  print(f"load average after: {os.getloadavg()[0]:.2f}")
  best = (
    max(per_core for (m, _), (_, per_core) in results.items() if m == "generator")
    if any(m == "generator" for m, _ in results)
    else None
  )
  if best is not None:
    verdict = "meets" if best >= 10 * ORIGINAL_SAMPLES_PER_S_PER_CORE else "misses"
    print(
      f"generator: {best:.0f} samples/s/core best -> {verdict} the goal of "
      f"{10 * ORIGINAL_SAMPLES_PER_S_PER_CORE:.0f}"
    )
  if tmp is not None:
    tmp.cleanup()
  return 0


if __name__ == "__main__":
  sys.exit(main())
