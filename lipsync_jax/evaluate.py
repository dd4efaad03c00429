"""CLI: LSE-D / LSE-C with SyncNet v2, sync scoring with our own expert, mouth PSNR / SSIM.

  python -m lipsync_jax.evaluate lse   --videos DIR_OR_FILES... --syncnet syncnet_v2.model [--json out.json]
                                       [--face_crop] [--protocol reference|direct]
  python -m lipsync_jax.evaluate sync  --video V --expert CKPT [--box T B L R] [--plot out.png] [--json J]
  python -m lipsync_jax.evaluate recon --generated V1 --reference V2 [--box T B L R] [--json out.json]

Owns the flags only; the metric definitions (spec section 10) and the library functions live in
`lipsync_jax.evaluation` (lse, sync, recon, offsets). Output: a progress bar and the result lines (or one
`error:` line and exit status 1). `lse --protocol reference` (default) reads frames through the reference
script's ffmpeg JPEG round trip, so its numbers are comparable to published LSE-D / LSE-C; `--protocol
direct` skips it (LSE-D ~3 % off the published protocol: not comparable).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from lipsync_jax import compile_cache, fs, logs
from lipsync_jax.evaluation import lse, recon, sync
from lipsync_jax.evaluation.faces import EvaluationError
from lipsync_jax.media import detectors


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="python -m lipsync_jax.evaluate",
    description="LSE-D / LSE-C, expert sync scores and mouth PSNR / SSIM of videos.",
  )
  sub = parser.add_subparsers(dest="command", required=True)
  lse_p = sub.add_parser("lse", help="LSE-D / LSE-C / AV offset with SyncNet v2")
  lse_p.add_argument("--videos", nargs="+", required=True, help="video files and/or directories")
  lse_p.add_argument("--syncnet", required=True, help="syncnet_v2.model (PyTorch state dict)")
  lse_p.add_argument("--batch_size", type=int, default=20)
  lse_p.add_argument(
    "--face_crop",
    action="store_true",
    help="detect and crop faces like syncnet_python's pipeline (real videos); default: whole "
    "frames resized to 224 (generated face videos, the paper's LRS2 protocol)",
  )
  detectors.add_flags(lse_p)
  compile_cache.add_flag(lse_p)
  lse_p.add_argument(
    "--protocol",
    choices=lse.PROTOCOLS,
    default=lse.DEFAULT_PROTOCOL,
    help="how frames are read. reference (default): through the JPEG round trip of the reference scoring "
    "script (ffmpeg CLI's default-quality JPEG frames + cv2.imread, done in process, bit-exact), as the "
    "published LSE numbers are; direct: frames decoded straight, no JPEG round trip - NOT comparable to "
    "published numbers (LSE-D moves by a few percent)",
  )
  lse_p.add_argument("--json", default=None, help="also write the result as JSON here")
  sync_p = sub.add_parser("sync", help="per-window sync probability and AV offset with our expert")
  sync_p.add_argument("--video", required=True)
  sync_p.add_argument("--expert", required=True, help="lipsync_expert.pth, variables dir or training workdir")
  detectors.add_flags(sync_p)
  compile_cache.add_flag(sync_p)
  sync_p.add_argument(
    "--box",
    type=int,
    nargs=4,
    default=None,
    metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
    help="constant face box instead of detection (as infer's --box)",
  )
  sync_p.add_argument("--plot", default=None, help="write a PNG plot here")
  sync_p.add_argument("--json", default=None)
  recon_p = sub.add_parser("recon", help="mouth-region PSNR / SSIM against ground truth")
  recon_p.add_argument("--generated", required=True)
  recon_p.add_argument("--reference", required=True)
  detectors.add_flags(recon_p)
  compile_cache.add_flag(recon_p)
  recon_p.add_argument(
    "--box",
    type=int,
    nargs=4,
    default=None,
    metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
    help="constant face box instead of detection on the reference",
  )
  recon_p.add_argument("--json", default=None)
  for sub_parser in (lse_p, sync_p, recon_p):
    logs.add_verbosity_flag(sub_parser)
  return parser


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  logs.setup(args.verbosity)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  compile_cache.enable(disabled=args.no_compile_cache)
  try:
    # Built once here (weights read once, a clear error for a bad --detector_weights), only when used.
    needs_faces = args.face_crop if args.command == "lse" else args.box is None
    detector = detectors.from_flags(args) if needs_faces else args.detector
    if args.command == "lse":
      result = lse.evaluate_lse(
        args.videos,
        args.syncnet,
        args.batch_size,
        face_crop=args.face_crop,
        detector=detector,
        protocol=args.protocol,
      )
      print(lse.format_table(result))
      if not result["videos"]:
        raise EvaluationError("no video could be scored (see FAILED lines)")
    elif args.command == "sync":
      result = sync.sync_video(args.video, args.expert, detector, args.box)
      print(
        f"{args.video}: AV offset {result['offset']} frames, confidence {result['confidence']:.3f}, "
        f"mean sync probability {result['mean_sync_prob']:.3f} over {result['windows']} windows"
      )
      if args.plot:
        sync.plot_sync(result, args.plot)
        print(f"plot: {args.plot}")
    else:
      result = recon.recon_videos(args.generated, args.reference, detector, args.box)
      print(f"mouth PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.4f} over {result['frames']} frames")
  except (ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  if args.json:
    with fs.open(args.json, "w") as f:
      json.dump(result, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
