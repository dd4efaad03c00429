"""The built-in demo corpus as training shards, built on first use into a cache directory.

`ensure_demo_shards()` renders the synthetic talking-face corpus (lipsync_jax.data.synthetic.make_corpus),
preprocesses it like any other video corpus (data_pipelines.preprocess.run: face detection, crops, mels,
TFRecord shards) and returns the shards directory. Later calls reuse it. The cache directory is
$LIPSYNC_JAX_CACHE, else ~/.cache/lipsync_jax. Processes on one host that ask at the same time build it
once (a file lock); each host with its own disk builds its own copy.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time

CACHE_ENV = 'LIPSYNC_JAX_CACHE'
DEFAULT_NUM_CLIPS = 120
INFO_FILE = 'dataset_info.json'


def cache_root(cache_dir: str | None = None) -> str:
  return os.path.expanduser(cache_dir or os.environ.get(CACHE_ENV) or '~/.cache/lipsync_jax')


def demo_paths(cache_dir: str | None = None, num_clips: int = DEFAULT_NUM_CLIPS, img_size: int = 96,
               seed: int = 0) -> tuple[str, str]:
  """(raw corpus dir, shards dir) of one demo corpus configuration inside the cache."""
  base = os.path.join(cache_root(cache_dir), f'demo-{num_clips}clips-seed{seed}')
  return os.path.join(base, 'raw'), os.path.join(base, f'shards-{img_size}px')


def ensure_demo_shards(cache_dir: str | None = None, num_clips: int = DEFAULT_NUM_CLIPS, img_size: int = 96,
                       seed: int = 0) -> str:
  """Returns the shards dir of the demo corpus, building it (logged, with progress) if it is missing."""
  raw_dir, shards_dir = demo_paths(cache_dir, num_clips, img_size, seed)
  if os.path.isfile(os.path.join(shards_dir, INFO_FILE)):
    return shards_dir
  os.makedirs(os.path.dirname(shards_dir), exist_ok=True)
  lock_path = os.path.join(os.path.dirname(shards_dir), '.build.lock')
  with open(lock_path, 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # another process on this host may be building it right now
    try:
      if os.path.isfile(os.path.join(shards_dir, INFO_FILE)):
        return shards_dir
      from data_pipelines import preprocess  # pylint: disable=g-import-not-at-top
      from lipsync_jax.data import synthetic  # pylint: disable=g-import-not-at-top
      start = time.time()
      logging.info('demo corpus: building %d synthetic clips (seed %d) into %s (first use; set $%s to '
                   'choose the cache dir)', num_clips, seed, raw_dir, CACHE_ENV)
      synthetic.make_corpus(raw_dir, num_clips=num_clips, seed=seed)
      logging.info('demo corpus: preprocessing into %s shards at %d px', shards_dir, img_size)
      info = preprocess.run(shards_dir, data_root=raw_dir, img_size=img_size, detector='haar')
      logging.info('demo corpus: ready in %.0f s: %s', time.time() - start,
                   json.dumps({k: info.get(k) for k in ('num_clips', 'num_skipped', 'splits')
                               if k in info}))
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  return shards_dir
