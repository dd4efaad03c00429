"""CLI: export a checkpoint as a jax.export serving artifact (the library is lipsync_jax.inference.export).

python -m lipsync_jax.export --checkpoint CKPT --kind wav2lip --out DIR [--batch symbolic|N]
    [--platforms cpu,cuda,tpu]     (CKPT: anything lipsync_jax.weights.load reads)
"""

from __future__ import annotations

import argparse
import sys

from lipsync_jax import logs, weights
from lipsync_jax.inference.export import DEFAULT_PLATFORMS, KINDS, export_model


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m lipsync_jax.export", description="Export a checkpoint as a jax.export serving artifact."
  )
  parser.add_argument("--checkpoint", required=True, help="official .pth, variables dir or training workdir")
  parser.add_argument("--kind", choices=KINDS, default="wav2lip")
  parser.add_argument("--out", required=True, help="artifact directory")
  parser.add_argument("--batch", default="symbolic", help="'symbolic' (any batch) or a fixed batch size")
  parser.add_argument("--platforms", default=",".join(DEFAULT_PLATFORMS), help="comma list of platforms")
  logs.add_verbosity_flag(parser)
  args = parser.parse_args(argv)
  logs.setup(args.verbosity)
  try:
    variables, meta = weights.load(args.checkpoint, args.kind)
    platforms = args.platforms.split(",") if args.platforms else None
    result = export_model(variables, meta, args.out, args.kind, args.batch, platforms)
  except (ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"exported {args.kind} (batch {result['batch']}, platforms {result['platforms']}) to {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
