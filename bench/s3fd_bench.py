"""Face-detection speed: our Flax S3FD vs the PyTorch S3FD run the original way vs OpenCV's Haar cascade.

Prints frames/s per frame size (720p, 1080p) on the default JAX backend (CPU, or GPU / TPU when JAX has
one) for:
  flax-s3fd   lipsync_jax.media.s3fd.S3FDDetector (jitted network + NumPy decode / NMS), after compiling;
              the compile time is printed separately, and so are the network-only and decode-only times
  torch-s3fd  tests/s3fd_reference.py: torch forward on the batch + Wav2Lip's per-cell `batch_detect` loop +
              numpy NMS (torch threads = CPU cores), i.e. the original's way; the decode time separately
  haar        lipsync_jax.media.detectors.get_detector('haar') (one frame at a time, on the CPU)
on the same frames (a rendered cartoon face from the demo corpus, scaled up, on a noisy background).

Weights are RANDOM unless --weights s3fd.pth is given (the output says which). The per-cell decode's cost
grows with the number of cells scoring > 0.05 (one Python iteration each), which random weights do not
reproduce: the conf biases are shifted by --background_logit to make that count small, and the table
prints it (cells > 0.05 per frame) so runs can be compared. Real weights on real footage give their own.

  python bench/s3fd_bench.py                                  # 8 frames, 720p + 1080p, batch 4
  python bench/s3fd_bench.py --frames 16 --batch 16 --sizes 720p --dtypes float32,bfloat16
  python bench/s3fd_bench.py --weights s3fd.pth --skip haar
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

from lipsync_jax.media import detectors, face_detector, s3fd

SIZES = {"360p": (360, 640), "720p": (720, 1280), "1080p": (1080, 1920)}


def bench_frames(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
  """`count` BGR frames: a demo-corpus face scaled to half the frame height on a noisy grey background."""
  import cv2  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(seed)
  try:
    from lipsync_jax.data import synthetic  # pylint: disable=import-outside-toplevel

    spec = synthetic.ClipSpec("s000/00000", speaker_index=0, clip_index=0, seconds=count / 25 + 0.2, seed=0)
    faces = list(synthetic.render_clip(spec)[0]())[:count]
  except Exception:  # pylint: disable=broad-except  # the renderer is optional here: noise frames still time
    faces = [rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)] * count
  side = height // 2
  out = np.empty((count, height, width, 3), np.uint8)
  for i in range(count):
    frame = np.clip(rng.normal(110, 25, (height, width, 3)), 0, 255).astype(np.uint8)
    y, x = height // 4, width // 2 - side // 2
    frame[y : y + side, x : x + side] = cv2.resize(faces[i % len(faces)], (side, side))
    out[i] = frame
  return out


def variables_for(args: argparse.Namespace) -> tuple[dict, str]:
  if args.weights:
    return s3fd.load_s3fd(args.weights), f"weights {args.weights}"
  variables = s3fd.random_variables(args.seed)
  for source, conf in s3fd.HEADS:  # shift background (channel 0; channels 0..2 of the max-out head) up
    bias = variables["params"][f"{source}_mbox_conf"]["bias"]
    bias[: conf - 1] += args.background_logit
  return variables, f"RANDOM weights (seed {args.seed}, background logit +{args.background_logit})"


def to_torch_state(variables: dict) -> dict:
  """Our variables -> the s3fd.pth state_dict (OIHW kernels) for the PyTorch reference."""
  import torch  # pylint: disable=import-outside-toplevel

  state = {}
  for module, leaves in variables["params"].items():
    for leaf, value in leaves.items():
      value = np.asarray(value)
      if leaf == "kernel":
        state[f"{module}.weight"] = torch.from_numpy(np.ascontiguousarray(value.transpose(3, 2, 0, 1)))
      else:
        state[f"{module}.{leaf}"] = torch.from_numpy(value.copy())
  return state


def run_flax(variables, frames: np.ndarray, batch: int, dtype: str) -> dict:
  det = s3fd.S3FDDetector(variables, batch_size=batch, compute_dtype=dtype)
  height, width = frames.shape[1:3]
  start = time.perf_counter()
  compiled = det._runner(batch).compile(jax.ShapeDtypeStruct((height, width, 3), np.uint8))  # pylint: disable=protected-access
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list | tuple) else cost
  flops = float((cost or {}).get("flops", 0.0)) / batch
  det.detect_faces(list(frames[:batch]))  # warm-up (first run allocations)
  start = time.perf_counter()
  faces = det.detect_faces(list(frames))
  total = time.perf_counter() - start
  start = time.perf_counter()
  probs, locs = det.cells(frames)
  network = time.perf_counter() - start
  priors = s3fd.prior_boxes(height, width)
  start = time.perf_counter()
  for prob, loc in zip(probs, locs):
    s3fd.decode(prob, loc, priors)
  decode = time.perf_counter() - start
  return {
    "fps": len(frames) / total,
    "compile_s": compile_s,
    "network_ms": 1e3 * network / len(frames),
    "decode_ms": 1e3 * decode / len(frames),
    "cells_005": float(np.mean(np.sum(probs > 0.05, axis=1))),
    "gflop": flops / 1e9,
    "boxes": [face_detector.best_box(f) for f in faces],
  }


def run_torch(variables, frames: np.ndarray, batch: int) -> dict:
  import torch  # pylint: disable=import-outside-toplevel

  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
  import s3fd_reference as ref  # pylint: disable=import-outside-toplevel

  torch.set_num_threads(os.cpu_count() or 1)
  net = ref.S3FDNet().eval()
  net.load_state_dict(to_torch_state(variables))
  forward = decode = 0.0
  boxes = []
  with torch.no_grad():
    net(ref.preprocess(frames[:1]))  # warm-up
    for start in range(0, len(frames), batch):
      chunk = frames[start : start + batch]
      t0 = time.perf_counter()
      outputs = net(ref.preprocess(chunk))
      t1 = time.perf_counter()
      rows = ref.detect_from_batch(outputs)
      t2 = time.perf_counter()
      forward += t1 - t0
      decode += t2 - t1
      for r in rows:  # Wav2Lip's box, clipped to the frame as the face track does
        box = ref.wav2lip_box(r)
        height, width = frames.shape[1:3]
        boxes.append(box and (box[0], box[1], min(box[2], width), min(box[3], height)))
  total = forward + decode
  return {
    "fps": len(frames) / total,
    "network_ms": 1e3 * forward / len(frames),
    "decode_ms": 1e3 * decode / len(frames),
    "boxes": boxes,
  }


def run_haar(frames: np.ndarray) -> dict:
  det = detectors.get_detector("haar")
  det.detect(list(frames[:1]))
  start = time.perf_counter()
  boxes = det.detect(list(frames))
  return {"fps": len(frames) / (time.perf_counter() - start), "boxes": boxes}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--frames", type=int, default=8)
  parser.add_argument("--batch", type=int, default=4, help="S3FD frames per call (the original: 16)")
  parser.add_argument("--sizes", default="720p,1080p", help=f"comma list of {sorted(SIZES)}")
  parser.add_argument("--dtypes", default="float32", help="flax compute dtypes: float32,bfloat16")
  parser.add_argument("--weights", default="", help="s3fd.pth (default: random weights)")
  parser.add_argument("--background_logit", type=float, default=4.0, help="random weights only")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--skip", default="", help="comma list of: torch, haar")
  args = parser.parse_args()
  skip = set(filter(None, args.skip.split(",")))
  variables, what = variables_for(args)
  device = jax.devices()[0].device_kind
  print(f"backend {jax.default_backend()} ({device}), {os.cpu_count()} CPU cores; {what}")
  print(f"{args.frames} frames, batch {args.batch}; fps = frames / wall time after compile and warm-up")
  header = f"{'size':>6} {'detector':<18} {'fps':>8} {'compile s':>9} {'net ms/f':>9} {'decode ms/f':>11} "
  print(header + f"{'cells>0.05/f':>12} {'GFLOP/f':>8} {'same box as torch-s3fd':>22}")
  for size in args.sizes.split(","):
    height, width = SIZES[size]
    frames = bench_frames(args.frames, height, width, args.seed)
    results = {}
    if "torch" not in skip:
      try:
        results["torch-s3fd"] = run_torch(variables, frames, args.batch)
      except ImportError:
        print("torch not installed: no torch-s3fd row (pip install -e .[torch])")
    for dtype in args.dtypes.split(","):
      results[f"flax-s3fd {dtype}"] = run_flax(variables, frames, args.batch, dtype)
    if "haar" not in skip:
      results["haar"] = run_haar(frames)
    reference = results.get("torch-s3fd", {}).get("boxes")
    for name, r in results.items():

      def fmt(key, spec, r=r):
        return format(r[key], spec) if key in r else "-"

      same = "-"
      if reference is not None and name.startswith("flax"):
        same = f"{sum(a == b for a, b in zip(r['boxes'], reference))}/{len(reference)}"
      print(
        f"{size:>6} {name:<18} {r['fps']:8.3f} {fmt('compile_s', '9.1f'):>9} {fmt('network_ms', '9.0f'):>9} "
        f"{fmt('decode_ms', '11.1f'):>11} {fmt('cells_005', '12.0f'):>12} {fmt('gflop', '8.0f'):>8} {same:>22}"
      )


if __name__ == "__main__":
  main()
