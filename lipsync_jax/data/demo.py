"""The built-in demo corpus as training shards, built on first use into a cache directory.

Owns the demo corpus cache (`ensure_demo_shards`, `demo_paths`, `cache_root`) and the local, Beam-free
shard builder it uses (`build_shards`):

  lipsync_jax.data.synthetic.make_corpus (render the cartoon talking faces: mp4 + filelists)
  -> lipsync_jax.data.clips.process_to_record per clip (the very function the Beam job runs), in a process
     pool over the cores this process may use
  -> lipsync_jax.data.tfrecord.write_tfrecord, with the Beam job's shard names and clip-to-shard rule
     (dataset_info.assign_shards; records sorted by clip id): the same shard bytes as the Beam job
  -> the shard index (lipsync_jax.data.shard_index, index-{split}.json) and lipsync_jax.data.dataset_info
     (the same content as the Beam job's, created_by this module, last_run describing the pool).

Later calls reuse the shards. The cache directory is $LIPSYNC_JAX_CACHE, else ~/.cache/lipsync_jax.
Processes on one host that ask at the same time build it once (a file lock); each host with its own disk
builds its own copy. Building shows tqdm progress bars (rate, ETA) and prints nothing else.
"""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import time

import tqdm

from lipsync_jax import fs
from lipsync_jax.data import clips, dataset_info, records, reindex, shard_index, tfrecord
from lipsync_jax.data.clips import ClipTask, PreprocessConfig
from lipsync_jax.fs import CACHE_ENV, cache_root

DEFAULT_NUM_CLIPS = 120
log = logging.getLogger(__name__)


# The shards' layout version, part of their cache directory's name. Bump it when the clip -> record code
# changes the shard bytes of the same raw corpus (record order, mel or crop rule): an install upgraded in
# place then builds new shards instead of training on a cache an older version wrote. (Measured: shards
# built before the issue-11 shard writer held the same clips in another record order; the demo expert's
# held-out accuracy read 0.879 on them vs 0.887 on a fresh build.)
SHARDS_VERSION = 2


def demo_paths(
  cache_dir: str | None = None,
  num_clips: int = DEFAULT_NUM_CLIPS,
  img_size: int = 96,
  seed: int = 0,
  frame_size: int = 0,
) -> tuple[str, str]:
  """(raw corpus dir, shards dir) of one demo corpus configuration inside the cache.

  frame_size: the rendered video's side in pixels (0 = synthetic.FRAME_SIZE, 160: faces of ~70-90 px, right
  for 96 px crops; HD crops want larger renders, e.g. 256 for 192 px, 384 for 288 px).
  """
  suffix = f'-{int(frame_size)}px' if frame_size else ''
  base = os.path.join(cache_root(cache_dir), f'demo-{num_clips}clips-seed{seed}{suffix}')
  return os.path.join(base, 'raw'), os.path.join(base, f'shards-{img_size}px-v{SHARDS_VERSION}')


def _usable_cores() -> int:
  try:
    return len(os.sched_getaffinity(0)) or 1
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


# One detector per worker process (set by the pool's initializer).
_WORKER: dict = {}


def _init_worker(config: PreprocessConfig) -> None:
  _WORKER['config'], _WORKER['detector'] = config, config.make_detector()


def _process(task: ClipTask) -> tuple[bytes | None, dict]:
  return clips.process_to_record(task, _WORKER['config'], _WORKER['detector'])


def build_shards(
  data_root: str,
  out_dir: str,
  config: PreprocessConfig,
  workers: int | None = None,
  clips_per_shard: int = 128,
  progress: bool = True,
) -> dict:
  """Preprocesses data_root/{train,val,test}.txt clips into out_dir without Beam; returns dataset_info.

  The same shards, byte for byte, as `python -m data_pipelines.preprocess --data_root DATA_ROOT` with the
  same settings (the same per-clip function and clip-to-shard rule), plus their index files. Older shards
  and index files in out_dir (local or gs://) are replaced. workers: processes (default: the cores this
  process may use; 1 = in this process).
  """
  start = time.time()
  tasks, duplicates = clips.dedupe(clips.list_tasks(data_root=data_root))
  tasks = sorted(tasks, key=lambda t: (t.split, t.clip_id))
  workers = max(1, min(int(workers or _usable_cores()), len(tasks)))
  results: list[tuple[bytes | None, dict]] = []
  bar = tqdm.tqdm(total=len(tasks), desc='demo corpus: preprocessing', unit='clip', disable=not progress)
  if workers == 1:
    _init_worker(config)
    for task in tasks:
      results.append(_process(task))
      bar.update()
  else:
    # spawn: safe even when the caller has JAX/threads running (fork is not).
    with multiprocessing.get_context('spawn').Pool(workers, _init_worker, (config,)) as pool:
      for result in pool.imap(_process, tasks):
        results.append(result)
        bar.update()
  bar.close()
  reports = [report for _, report in results] + duplicates
  tasks_per_split: dict[str, int] = {}
  for task in tasks:
    tasks_per_split[task.split] = tasks_per_split.get(task.split, 0) + 1
  # As the Beam job: shards from the clips listed (skipped ones included), the same clip -> shard rule.
  shards_per_split = dataset_info.shards_per_split(tasks_per_split, clips_per_shard=clips_per_shard)
  shard_of = dataset_info.assign_shards(tasks, shards_per_split)
  fs.makedirs(out_dir)
  for name in fs.listdir(out_dir):  # an earlier build (its info first): gone before the new one lands
    if (
      name == dataset_info.INFO_FILE
      or records.SHARD_PATTERN.match(name)
      or shard_index.INDEX_PATTERN.match(name)
    ):
      fs.remove(os.path.join(out_dir, name))
  for split, count in sorted(shards_per_split.items()):
    entries = []
    for shard in range(count):
      name = records.shard_name(split, shard, count)
      payloads = [  # tasks are sorted by (split, clip id): each shard's records are in clip id order
        record
        for task, (record, _), task_shard in zip(tasks, results, shard_of)
        if task.split == split and task_shard == shard and record is not None
      ]
      offsets, lengths = tfrecord.write_tfrecord(os.path.join(out_dir, name), payloads)
      entries.append(shard_index.make_entry(name, tfrecord.framed_size(lengths), offsets, lengths, payloads))
    shard_index.write(out_dir, split, entries)
  elapsed = time.time() - start
  run_meta = dict(
    runner='lipsync_jax.data.demo (process pool)',
    num_inputs=len(tasks),
    seconds=round(elapsed, 2),
    counters=dataset_info.counters(reports),
    clips_per_second=round(len(tasks) / max(elapsed, 1e-9), 3),
    workers=workers,
    finished=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
  )
  info = dataset_info.build(
    config,
    reports,
    shards_per_split,
    previous=None,
    overwrite=True,
    run_meta=run_meta,
    created_by='lipsync_jax.data.demo',
  )
  dataset_info.write(out_dir, info)  # last: its presence marks a complete build
  return info


def ensure_demo_shards(
  cache_dir: str | None = None,
  num_clips: int = DEFAULT_NUM_CLIPS,
  img_size: int = 96,
  seed: int = 0,
  frame_size: int = 0,
) -> str:
  """Returns the shards dir of the demo corpus, building it (with progress bars) if it is missing.

  frame_size: rendered video side (0 = synthetic.FRAME_SIZE); see `demo_paths`.
  """
  raw_dir, shards_dir = demo_paths(cache_dir, num_clips, img_size, seed, frame_size)
  if os.path.isfile(os.path.join(shards_dir, dataset_info.INFO_FILE)):
    _index_older_build(shards_dir)
    return shards_dir
  os.makedirs(os.path.dirname(shards_dir), exist_ok=True)
  lock_path = os.path.join(os.path.dirname(shards_dir), '.build.lock')
  with open(lock_path, 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # another process on this host may be building it right now
    try:
      if os.path.isfile(os.path.join(shards_dir, dataset_info.INFO_FILE)):
        _index_older_build(shards_dir)
        return shards_dir
      from lipsync_jax.data import synthetic  # pylint: disable=g-import-not-at-top

      start = time.time()
      log.debug(
        'demo corpus: building %d synthetic clips (seed %d) into %s (first use; set $%s to choose '
        'the cache dir)',
        num_clips,
        seed,
        raw_dir,
        CACHE_ENV,
      )
      synthetic.make_corpus(
        raw_dir, num_clips=num_clips, seed=seed, frame_size=int(frame_size) or synthetic.FRAME_SIZE
      )
      info = build_shards(raw_dir, shards_dir, PreprocessConfig(img_size=img_size, detector='haar'))
      log.debug(
        'demo corpus: ready in %.0f s: %d clips, %d skipped',
        time.time() - start,
        info['num_clips'],
        info['num_skipped'],
      )
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  return shards_dir


def _index_older_build(shards_dir: str) -> None:
  """Writes the index files a cache built before the shard index existed lacks (a local scan, < 1 s)."""
  for split in (dataset_info.read(shards_dir) or {}).get('splits', {}):
    if not os.path.isfile(shard_index.index_path(shards_dir, split)):
      shard_index.write(shards_dir, split, reindex.build(shards_dir, split).shards)
