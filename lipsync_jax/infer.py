"""CLI: lip-sync a video (or a still image) to an audio track with a Wav2Lip generator.

  python -m lipsync_jax.infer --face FACE --audio AUDIO --checkpoint CKPT --out OUT.mp4 [options]

FACE: a video or a still image (.jpg/.png/...). AUDIO: wav, mp3 or any container with an audio track.
CKPT: anything `lipsync_jax.weights.load` reads: an official `.pth` (converted on the fly), a lipsync_jax
variables directory (`lipsync_jax_meta.json`), or a training workdir (its latest generator); or a wav2lip
`jax.export` artifact directory (`python -m lipsync_jax.export`, served by lipsync_jax.inference.serving;
float32 only). The face size (96, 192, 288) is the checkpoint's. The options are
the original inference.py's. Every path (FACE, AUDIO, CKPT, OUT, --stats_json, --detector_weights) may be
a gs://... URL (lipsync_jax.fs). Owns the flags only; the pipeline and the programmatic API
(`lipsync_jax.inference.lipsync.lipsync`) live in `lipsync_jax.inference`. Output: a progress bar and one
result line (or one `error:` line and exit status 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import jax.numpy as jnp

from lipsync_jax import compile_cache, fs, logs, weights
from lipsync_jax.inference import export, lipsync, serving
from lipsync_jax.inference.frames import InferenceError
from lipsync_jax.media import detectors, track


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    prog="python -m lipsync_jax.infer",
    description="Lip-sync a face video or image to an audio track (Wav2Lip).",
  )
  p.add_argument("--face", required=True, help="video or image containing a face")
  p.add_argument("--audio", required=True, help="wav / mp3 / any file with an audio track")
  p.add_argument(
    "--checkpoint",
    required=True,
    help="official .pth, lipsync_jax variables dir, training workdir (latest generator), or a wav2lip "
    "export dir (python -m lipsync_jax.export)",
  )
  p.add_argument("--out", "--outfile", dest="out", default="results/result_voice.mp4")
  p.add_argument("--static", action="store_true", help="use only the first video frame")
  p.add_argument("--fps", type=float, default=25.0, help="frame rate for a still image input")
  sides = ("TOP", "BOTTOM", "LEFT", "RIGHT")
  p.add_argument("--pads", type=int, nargs=4, default=list(track.DEFAULT_PADS), metavar=sides)
  p.add_argument("--batch_size", "--wav2lip_batch_size", dest="batch_size", type=int, default=128)
  p.add_argument("--resize_factor", type=int, default=1, help="downscale the video by this factor first")
  p.add_argument(
    "--crop",
    type=int,
    nargs=4,
    default=[0, -1, 0, -1],
    metavar=sides,
    help="crop the (resized) video; -1 = to the edge",
  )
  p.add_argument(
    "--box",
    type=int,
    nargs=4,
    default=[-1, -1, -1, -1],
    metavar=sides,
    help="constant face box instead of detection",
  )
  p.add_argument("--rotate", action="store_true", help="rotate frames 90 degrees clockwise")
  p.add_argument("--nosmooth", action="store_true", help="do not smooth boxes over 5 frames")
  detectors.add_flags(p)
  p.add_argument(
    "--no_face",
    choices=track.NO_FACE_POLICIES,
    default="carry",
    help="frames without a detected face: carry the nearest box, or pass the frame through",
  )
  p.add_argument(
    "--dtype",
    choices=("float32", "bfloat16"),
    default="float32",
    help="generator compute dtype (params stay float32); bfloat16 is faster on GPU/TPU and on "
    "CPUs with AMX/AVX512-BF16",
  )
  p.add_argument("--no_progress", action="store_true")
  compile_cache.add_flag(p)
  p.add_argument(
    "--stats_json",
    default=None,
    help="also write the run's figures (frames, seconds per stage, XLA programs compiled / loaded from "
    "the cache) to this JSON file",
  )
  logs.add_verbosity_flag(p)
  return p


def _load_generator(args: argparse.Namespace) -> tuple[dict | None, dict, lipsync.Generator | None]:
  """(variables, meta, None) from a checkpoint, or (None, export meta, ExportedGenerator) from an export dir."""
  if not fs.isfile(os.path.join(args.checkpoint, export.META_FILE)):
    variables, meta = weights.load(args.checkpoint, "wav2lip")
    return variables, meta, None
  if args.dtype != "float32":
    raise InferenceError(
      f"--checkpoint {args.checkpoint} is a float32 export artifact; drop --dtype {args.dtype} "
      "(or pass the checkpoint it was exported from)"
    )
  served = serving.load(args.checkpoint)
  return None, dict(served.meta), lipsync.ExportedGenerator(served, args.batch_size)


def main(argv: list[str] | None = None) -> int:
  start = time.perf_counter()
  args = _parser().parse_args(argv)
  logs.setup(args.verbosity)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  cache_dir = compile_cache.enable(disabled=args.no_compile_cache)
  try:
    for flag, path in (("--face", args.face), ("--audio", args.audio), ("--checkpoint", args.checkpoint)):
      if not fs.exists(path):
        raise InferenceError(f"{flag} {path!r} does not exist")
    with compile_cache.count_compiles() as compiles:
      variables, meta, generator = _load_generator(args)
      load_s = time.perf_counter() - start
      stats = lipsync.lipsync(
        args.face,
        args.audio,
        variables,
        args.out,
        meta,
        pads=args.pads,
        nosmooth=args.nosmooth,
        box=args.box,
        resize_factor=args.resize_factor,
        crop=args.crop,
        rotate=args.rotate,
        static=args.static,
        fps=args.fps,
        batch_size=args.batch_size,
        # Built here (a bad --detector_weights fails before any work), only when boxes are detected.
        detector=detectors.from_flags(args) if args.box[0] == -1 else args.detector,
        no_face=args.no_face,
        progress=not args.no_progress,
        compute_dtype=jnp.dtype(args.dtype),
        generator=generator,
      )
    stats.update(
      compile_cache_dir=cache_dir,
      xla_programs=compiles["programs"],
      xla_cache_hits=compiles["cache_hits"],
      load_s=load_s,
      main_s=time.perf_counter() - start,
    )
    if args.stats_json:
      with fs.open(args.stats_json, "w") as f:
        json.dump(stats, f, indent=1)
  except (ValueError, OSError, NotImplementedError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(
    f"wrote {stats['out']}: {stats['frames']} frames {stats['width']}x{stats['height']} @ "
    f"{stats['fps']:g} fps, {stats['frames_without_face']} frames without a detected face "
    f"({stats['carried_frames']} carried, {stats['passthrough_frames']} passed through), "
    f"{stats['scene_cuts']} scene cuts, {stats['frames_per_s']:.1f} frames/s; XLA programs: "
    f"{stats['xla_programs'] - stats['xla_cache_hits']} compiled, {stats['xla_cache_hits']} from the compile "
    f"cache"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
