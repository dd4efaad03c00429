"""`python -m lipsync_jax.data.reindex SHARDS_DIR [--split S]`: the shard index for shards that have none.

Owns `build` (a split's lipsync_jax.data.shard_index.ShardIndex from the shards' bytes: every record read
once, lipsync_jax.data.tfrecord.scan_shard) and its CLI, which writes `index-{split}.json` for shards made
before the index existed or edited by hand. Preprocessing and the demo builder write the index as they
write the shards and never need this.
"""

from __future__ import annotations

import argparse
import concurrent.futures
from collections.abc import Sequence

from lipsync_jax import fs
from lipsync_jax.data import records, shard_index, tfrecord


def build(shards_dir: str, split: str, threads: int = 16) -> shard_index.ShardIndex:
  """The index of a split's shards as they are on disk: reads every record once (tfrecord.scan_shard)."""
  paths = tfrecord.find_shards(shards_dir, split)
  with concurrent.futures.ThreadPoolExecutor(max(1, min(threads, len(paths)))) as pool:
    entries = list(pool.map(tfrecord.scan_shard, paths))
  return shard_index.ShardIndex(split, tuple(entries))


def main(argv: Sequence[str] | None = None) -> list[str]:
  """CLI: write index-{split}.json for shards that have none (made before the index, or edited by hand)."""
  parser = argparse.ArgumentParser(
    prog="python -m lipsync_jax.data.reindex",
    description="Index existing TFRecord shards (reads every record once) and write index-{split}.json.",
  )
  parser.add_argument("shards_dir", help="directory of {split}-xxxxx-of-nnnnn.tfrecord shards (gs:// ok)")
  parser.add_argument("--split", action="append", help="split(s) to index (default: every split found)")
  args = parser.parse_args(argv)
  splits = args.split or sorted(
    {m["split"] for m in map(records.SHARD_PATTERN.match, fs.listdir(args.shards_dir)) if m}
  )
  if not splits:
    parser.error(f"no shards ({{split}}-xxxxx-of-nnnnn.tfrecord) in {args.shards_dir}")
  written = []
  for split in splits:
    index = build(args.shards_dir, split)
    written.append(shard_index.write(args.shards_dir, split, index.shards))
    print(f"{written[-1]}: {len(index.shards)} shards, {len(index)} records")
  return written


if __name__ == "__main__":
  main()
