"""End-to-end inference speed on a generated 720p clip, split into decode / detection / generator / encode.

Prints:
  1. `lipsync_jax.inference.lipsync.lipsync` end to end on a 1280x720 25 fps clip (a demo-corpus face
     rendered at 480 px and placed on a 720p canvas; Haar detection; random full-size generator weights):
     wall frames/s and the busy seconds per stage (decode and encode run in background threads, so stages
     overlap).
  2. The generator alone at --batch (default 128, the original's): seconds per batch and frames/s, with BN
     folded (what inference uses) and unfolded.
  3. The PyTorch reference generator (tests/torch_reference.py, eval mode, torch.no_grad) at the same batch
     on the same CPU, for an honest side-by-side (spec / issue figure: 0.69 s per 20 frames).

  python bench/infer_bench.py [--seconds 10.24] [--batch 128] [--width 1.0] [--no_torch] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]


def make_720p_clip(path: str, seconds: float, face_size: int = 480) -> int:
  """Renders a demo-corpus talking face into a 1280x720 canvas; returns the number of frames."""
  from lipsync_jax.data import synthetic
  from lipsync_jax.media import video

  clip = synthetic.render_clip(synthetic.ClipSpec("bench/clip", 0, 0, seconds, seed=0, frame_size=face_size))
  canvas = np.zeros((720, 1280, 3), np.uint8)
  canvas[:] = (60, 70, 80)
  x0, y0 = 400, (720 - face_size) // 2
  count = 0
  with video.VideoWriter(path, 25, 1280, 720) as writer:
    for frame in clip.frames():
      canvas[y0 : y0 + face_size, x0 : x0 + face_size] = frame
      writer.write(canvas)
      count += 1
    writer.close(audio=clip.wav, sample_rate=16000)
  return count


def time_it(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seconds", type=float, default=10.24)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--width", type=float, default=1.0)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--no_torch", action="store_true")
  parser.add_argument("--keep", default=None, help="directory to keep the clip and output in")
  args = parser.parse_args(argv)
  from lipsync_jax import logs

  logs.setup()

  from lipsync_jax.inference.lipsync import Generator, lipsync
  from lipsync_jax.models import Wav2Lip, example_inputs

  print(
    f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), {os.cpu_count()} CPUs visible, "
    f"jax {jax.__version__}"
  )
  work = args.keep or tempfile.mkdtemp(prefix="infer_bench_")
  os.makedirs(work, exist_ok=True)
  clip = os.path.join(work, "clip720p.mp4")
  start = time.perf_counter()
  num_frames = make_720p_clip(clip, args.seconds)
  print(f"made {clip}: {num_frames} frames 1280x720 in {time.perf_counter() - start:.1f} s")

  variables = Wav2Lip(width_multiplier=args.width).init(jax.random.key(0), *example_inputs("wav2lip", 1, 96))
  meta = {"width_multiplier": args.width, "img_size": 96}

  # 1. End to end.
  out = os.path.join(work, "out.mp4")
  stats = lipsync(clip, clip, variables, out, meta, batch_size=args.batch, progress=False)
  t = stats["timings_s"]
  n = stats["frames"]
  print(
    f"\n[end to end] {n} frames 1280x720, batch {stats['batch_size']}, BN folded {stats['bn_folded']}, "
    f"compiles {stats['compiles']}, frames without face {stats['frames_without_face']}"
  )
  print(
    f"  wall {stats['wall_s']:.2f} s -> {stats['frames_per_s']:.2f} frames/s "
    f"(incl. compile {t.get('compile', 0):.2f} s, audio+mel {t.get('audio', 0):.2f} s); "
    f"excluding compile: {n / (stats['wall_s'] - t.get('compile', 0)):.2f} frames/s"
  )
  for stage in ("decode", "detect", "prep", "generator", "paste", "encode", "mux"):
    sec = t.get(stage, 0.0)
    print(
      f"  {stage:<10} {sec:7.2f} s busy  {n / sec if sec else float('inf'):9.1f} frames/s  "
      f"{1000 * sec / n:7.2f} ms/frame"
    )

  # 2. Generator alone at the batch.
  rng = np.random.default_rng(0)
  mels = rng.normal(size=(args.batch, 80, 16)).astype(np.float32)
  crops = rng.integers(0, 255, (args.batch, 96, 96, 3), dtype=np.uint8)
  print(f"\n[generator] batch {args.batch}, width {args.width}")
  results, outputs = {}, {}
  for fold, dtype in ((True, "float32"), (False, "float32"), (True, "bfloat16")):
    start = time.perf_counter()
    runner = Generator(variables, meta, args.batch, compute_dtype=jnp.dtype(dtype), fold_bn=fold)
    compile_s = time.perf_counter() - start
    outputs[(fold, dtype)] = runner(mels, crops)
    sec = time_it(lambda runner=runner: runner(mels, crops), args.repeats)
    results[(fold, dtype)] = sec
    label = f"{dtype:<8} BN {'folded  ' if fold else 'unfolded'}"
    print(
      f"  JAX {label}: {sec:.3f} s/batch  {args.batch / sec:7.1f} frames/s"
      f"  ({20 * sec / args.batch:.3f} s per 20 frames; compile {compile_s:.1f} s)"
    )
  ref = outputs[(False, "float32")].astype(int)
  for key in ((True, "float32"), (True, "bfloat16")):
    diff = np.abs(outputs[key].astype(int) - ref)
    print(
      f"  uint8 output vs float32 unfolded, {key[1]} folded: max |diff| {diff.max()}, mean {diff.mean():.3f}"
    )

  # 3. PyTorch reference at the same batch.
  if not args.no_torch:
    import torch

    sys.path.insert(0, str(REPO / "tests"))
    from torch_reference import Wav2LipRef

    torch.set_num_threads(max(1, min(os.cpu_count() or 1, torch.get_num_threads())))
    model = Wav2LipRef().eval()
    if args.width != 1.0:
      print("  (PyTorch reference is full width only; skipping)")
    else:
      mel_t = torch.from_numpy(mels[:, None])  # (B,1,80,16)
      faces_t = torch.rand(args.batch, 6, 96, 96)
      with torch.no_grad():
        model(mel_t, faces_t)
        sec = time_it(lambda: model(mel_t, faces_t), args.repeats)
      print(
        f"  PyTorch eval (torch {torch.__version__}, {torch.get_num_threads()} threads): "
        f"{sec:.3f} s/batch  "
        f"{args.batch / sec:7.1f} frames/s  ({20 * sec / args.batch:.3f} s per 20 frames)"
      )
      print(
        f"  JAX float32 folded / PyTorch time ratio: {results[(True, 'float32')] / sec:.2f}; "
        f"bfloat16 folded / PyTorch: {results[(True, 'bfloat16')] / sec:.2f}"
      )


if __name__ == "__main__":
  main()
