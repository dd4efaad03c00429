"""CLI: LSE-D / LSE-C with SyncNet v2, sync scoring with our own expert, mouth PSNR / SSIM.

  python -m lipsync_jax.evaluate lse   --videos DIR_OR_FILES... --syncnet syncnet_v2.model [--json out.json]
                                       [--face_crop]
  python -m lipsync_jax.evaluate sync  --video V --expert CKPT [--box T B L R] [--plot out.png] [--json J]
  python -m lipsync_jax.evaluate recon --generated V1 --reference V2 [--box T B L R] [--json out.json]

Owns the flags only; the metric definitions (spec section 10) and the library functions live in
`lipsync_jax.evaluation` (lse, sync, recon, offsets). Output: a progress bar and the result lines (or one
`error:` line and exit status 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from lipsync_jax import fs, logs
from lipsync_jax.evaluation import lse, recon, sync
from lipsync_jax.evaluation.faces import EvaluationError


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
  lse_p.add_argument("--detector", default="haar")
  lse_p.add_argument("--json", default=None, help="also write the result as JSON here")
  sync_p = sub.add_parser("sync", help="per-window sync probability and AV offset with our expert")
  sync_p.add_argument("--video", required=True)
  sync_p.add_argument("--expert", required=True, help="lipsync_expert.pth, variables dir or training workdir")
  sync_p.add_argument("--detector", default="haar")
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
  recon_p.add_argument("--detector", default="haar")
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
  try:
    if args.command == "lse":
      result = lse.evaluate_lse(
        args.videos, args.syncnet, args.batch_size, face_crop=args.face_crop, detector=args.detector
      )
      print(lse.format_table(result))
      if not result["videos"]:
        raise EvaluationError("no video could be scored (see FAILED lines)")
    elif args.command == "sync":
      result = sync.sync_video(args.video, args.expert, args.detector, args.box)
      print(
        f"{args.video}: AV offset {result['offset']} frames, confidence {result['confidence']:.3f}, "
        f"mean sync probability {result['mean_sync_prob']:.3f} over {result['windows']} windows"
      )
      if args.plot:
        sync.plot_sync(result, args.plot)
        print(f"plot: {args.plot}")
    else:
      result = recon.recon_videos(args.generated, args.reference, args.detector, args.box)
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
