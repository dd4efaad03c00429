"""Preprocessing on Apache Beam: talking-face videos -> face crops + mels -> TFRecord shards.

Owns the Beam orchestration of preprocessing and its CLI: the pipeline (`build_pipeline`: list -> spread ->
`ProcessClipFn` -> group by shard -> `WriteShardFn`, our shard sink), the runner choice, progress, and the
output-directory protocol. The per-clip work is lipsync_jax.data.clips (`process_to_record`, also used by
the demo corpus builder), dataset_info.json is lipsync_jax.data.dataset_info, the shard index
(index-{split}.json) lipsync_jax.data.shard_index. Every file goes through lipsync_jax.fs: `--out` and
`--input` may be gs:// (videos are decoded from a local copy, lipsync_jax.data.clips).

  python -m data_pipelines.preprocess --input 'DIR/**/*.mp4' --out SHARDS [--img_size 96]
  python -m data_pipelines.preprocess --data_root LRS2/main --out SHARDS     # finds {train,val,test}.txt
  python -m data_pipelines.preprocess --filelist LRS2/train.txt --data_root LRS2/main --out SHARDS
  ... --out gs://B/shards --runner DataflowRunner --project P --region R --temp_location gs://B/tmp \
      --extra_packages dist/lipsync_jax-0.1.0-py3-none-any.whl   # workers need lipsync_jax installed

The per-clip options (--img_size, --detector, --pads, ...) are the fields of
lipsync_jax.data.clips.PreprocessConfig, the job options (--num_shards, --runner, ...) those of
`JobOptions` below: flags are generated from the fields (help text and choices are field metadata).
Bad input never stops the run: each clip that cannot be used is skipped with one reason
(lipsync_jax.data.clips.SKIP_REASONS), counted in Beam counters (namespace 'preprocess') and listed in
dataset_info.json.

Output directory protocol (safe to rerun into the same directory; a failed run leaves it as it was):
  1. The shard sink writes shards `{split}-{i:05d}-of-{n:05d}.tfrecord` into OUT/_staging-<run id>/ (local:
     temp file + rename; gs://: one object upload each), each with a sidecar holding its index entry and
     its clips' reports.
  2. Only after the pipeline succeeded: the index files of the rewritten splits are deleted, the shards are
     moved into OUT (same names are replaced), shards of the rewritten splits left from older runs are
     deleted, then index-{split}.json of each rewritten split and dataset_info.json are written atomically
     (local: temp file + rename; gs://: one object write). Splits not in this run keep their shards, index
     files and info entries (so train and val can be preprocessed by separate runs), unless their settings
     (img_size, frame format, audio hparams) differ, which is refused up front unless `overwrite=True`
     (then everything old is replaced). A commit cut short leaves shards without an index (they are read
     by scanning), never an index describing other bytes.

TFRecord files are standard (length, masked CRC-32C of the length, data, masked CRC-32C of the data);
they read with tf.data, grain.experimental.TFRecordIterDataset and lipsync_jax.data.records.parse_example.
Shards: `num_shards` per split if given, else ceil(clips / clips_per_shard). Which shard holds a clip is
fixed by the clip list (dataset_info.assign_shards: the split's clips sorted by clip_id, cut into
contiguous runs), and each shard's records are sorted by clip_id: the same inputs and settings give the
same shard bytes on any runner and worker count (and the same bytes as lipsync_jax.data.demo's builder).

Runner: `--runner DirectRunner` (default) runs Beam's FnApiRunner directly, chosen here: Beam's
DirectRunner would first try its Prism runner, which downloads a binary. direct_running_mode
'multi_processing' (default) with `direct_num_workers` = the cores this process may use (face detection and
JPEG coding are CPU bound; processes avoid the GIL) starts its workers as `python -m
data_pipelines.beam_worker` (quiet: SDK-harness logs go to the runner, shown at --verbosity 1). Beam's
DirectRunner keeps the grouped records in memory (about 0.13 MB per second of video at 96 px, JPEG q95):
corpora that outgrow one machine's memory should use a distributed runner (the same code; pass --runner
and its options through); there one shard's records are held by the worker writing it. Other runner
names go to Beam unchanged.

Quiet by default (lipsync_jax.logs): what a run prints is a progress line (clips done, rate, ETA) and the
final summary; `--verbosity 1` shows Beam's and the workers' logs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from lipsync_jax import fs, logs
from lipsync_jax.data import clips, dataset_info, records, shard_index, tfrecord
from lipsync_jax.data.clips import ClipTask, PreprocessConfig, option

LOG = logging.getLogger("data_pipelines.preprocess")

_STAGING_PREFIX = "_staging-"
COUNTER_NAMESPACE = "preprocess"
DIRECT_RUNNERS = ("DirectRunner", "direct", "FnApiRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")
WORKER_MODULE = "data_pipelines.beam_worker"


@dataclasses.dataclass(frozen=True)
class JobOptions:
  """How the job runs (not part of the records; recorded in dataset_info.json's last_run)."""

  num_shards: int = option(0, "shards per split (0: from clips_per_shard)")
  clips_per_shard: int = option(128, "clips per shard when --num_shards is 0")
  limit: int = option(0, "process only the first N clips")
  overwrite: bool = option(False, "replace a dataset with other settings")
  runner: str = option("DirectRunner", "Beam runner; other runners' options pass through")
  direct_num_workers: int = option(0, "DirectRunner workers (0: the cores this process may use)")
  direct_running_mode: str = option(
    "multi_processing",
    "DirectRunner workers as processes or threads",
    choices=("in_memory", "multi_threading", "multi_processing"),
  )


# ---------------------------------------------------------------------------------------------------------
# Progress: clips done over all workers, with rate and ETA.
# ---------------------------------------------------------------------------------------------------------


class Progress:
  """Clips done / total with rate and ETA on stderr: a tqdm bar on a terminal, else a line every `every_s`."""

  def __init__(self, total: int, desc: str, every_s: float = 15.0, enabled: bool = True):
    self.total, self.desc, self.every_s = int(total), desc, every_s
    self.done, self.start, self.last_line = 0, time.time(), time.time()
    self.enabled = enabled
    self.bar = None
    if enabled and sys.stderr.isatty():
      from tqdm import tqdm

      self.bar = tqdm(total=self.total, desc=desc, unit="clip")

  def update(self, done: int) -> None:
    done = min(int(done), self.total)
    if done <= self.done:
      return
    if self.bar is not None:
      self.bar.update(done - self.done)
    self.done = done
    now = time.time()
    if self.bar is None and self.enabled and (now - self.last_line >= self.every_s or done == self.total):
      self.last_line = now
      rate = done / max(now - self.start, 1e-9)
      eta = f", ETA {(self.total - done) / rate:.0f} s" if done < self.total else ""
      print(f"{self.desc}: {done}/{self.total} clips, {rate:.2f} clips/s{eta}", file=sys.stderr, flush=True)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


class _ProgressFiles:
  """Progress across worker processes of a local run: each finished clip appends one byte to a file of its
  worker in a local folder; a thread of the main process sums the sizes into a `Progress`."""

  def __init__(self, folder: str, progress: Progress, poll_s: float = 0.5):
    self.folder, self.progress, self.poll_s = folder, progress, poll_s
    os.makedirs(folder, exist_ok=True)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, name="preprocess-progress", daemon=True)
    self._thread.start()

  def count(self) -> int:
    with os.scandir(self.folder) as entries:
      return sum(entry.stat().st_size for entry in entries)

  def _run(self):
    while not self._stop.wait(self.poll_s):
      self.progress.update(self.count())

  def close(self) -> None:
    self._stop.set()
    self._thread.join()
    self.progress.update(self.count())
    self.progress.close()


# ---------------------------------------------------------------------------------------------------------
# The Beam pipeline.
# ---------------------------------------------------------------------------------------------------------


class ProcessClipFn(beam.DoFn):
  """(split, clip_id, path, shard) -> ((split, shard), (clip_id, record bytes | None, report JSON line)).

  Every clip, written or skipped, goes to its shard's group: the shard writer writes its records and keeps
  its reports."""

  def __init__(self, config: PreprocessConfig, progress_dir: str | None = None):
    super().__init__()
    self.config, self.progress_dir = config, progress_dir

  def setup(self):
    self.detector = self.config.make_detector()
    self.written = Metrics.counter(COUNTER_NAMESPACE, "clips_written")
    self.frames = Metrics.counter(COUNTER_NAMESPACE, "frames_written")
    self.millis = Metrics.distribution(COUNTER_NAMESPACE, "ms_per_clip")
    self.progress_file = None
    if self.progress_dir is not None:
      self.progress_file = os.path.join(self.progress_dir, f"{os.getpid()}-{uuid.uuid4().hex[:8]}")

  def process(self, element: tuple):
    split, clip_id, path, shard = element
    task = ClipTask(split, clip_id, path)
    start = time.time()
    record, report = clips.process_to_record(task, self.config, self.detector)
    self.millis.update(int(1000 * (time.time() - start)))
    if record is not None:
      self.written.inc()
      self.frames.inc(report["num_frames"])
      if report.get("damaged_packets"):  # kept, decoded around its damage (lipsync_jax.media.video)
        Metrics.counter(COUNTER_NAMESPACE, "clips_damaged").inc()
        Metrics.counter(COUNTER_NAMESPACE, "damaged_packets").inc(report["damaged_packets"])
    else:
      Metrics.counter(COUNTER_NAMESPACE, f"skipped_{report['reason']}").inc()
    if self.progress_file is not None:
      with open(self.progress_file, "ab") as f:
        f.write(b".")
    yield (split, shard), (clip_id, record, json.dumps(report, sort_keys=True))


def _meta_name(shard_name: str) -> str:
  """The staging sidecar of a shard: its index entry and its clips' reports (read by the commit)."""
  return f"{shard_name}.meta.json"


class WriteShardFn(beam.DoFn):
  """((split, shard), [(clip_id, record | None, report), ...]) -> the shard written into staging_dir.

  The shard sink (our own, instead of Beam's WriteToTFRecord): records sorted by clip_id, written with
  lipsync_jax.data.tfrecord.write_tfrecord through lipsync_jax.fs (local or gs://, no second file-system
  layer), plus a sidecar `<shard>.meta.json` with the shard's index entry (built from what was written, no
  re-read) and the per-clip reports. Same inputs -> same shard bytes, whatever the runner or worker count.
  A shard's records are held in memory while it is written (clips_per_shard x ~1 MB at 96 px)."""

  def __init__(self, staging_dir: str, shards_per_split: dict[str, int]):
    super().__init__()
    self.staging_dir, self.shards_per_split = staging_dir, dict(shards_per_split)

  def process(self, element: tuple):
    (split, shard), values = element
    items = sorted((v for v in values if v is not None), key=lambda v: v[0])  # v: (clip_id, record, report)
    name = records.shard_name(split, shard, self.shards_per_split[split])
    payloads = [record for _, record, _ in items if record is not None]
    offsets, lengths = tfrecord.write_tfrecord(os.path.join(self.staging_dir, name), payloads)
    entry = shard_index.make_entry(name, tfrecord.framed_size(lengths), offsets, lengths, payloads)
    meta = dict(entry=entry.to_json(), reports=[json.loads(report) for _, _, report in items])
    dataset_info.write_text_atomically(os.path.join(self.staging_dir, _meta_name(name)), json.dumps(meta))
    yield name


def build_pipeline(
  pipeline,
  tasks: Sequence[ClipTask],
  staging_dir: str,
  config: PreprocessConfig,
  shards_per_split: dict[str, int],
  progress_dir: str | None = None,
):
  """Adds the preprocessing transforms to `pipeline`: every shard of `shards_per_split` (and its sidecar)
  is written to staging_dir; each clip goes to the shard `dataset_info.assign_shards` gives it."""
  shards = dataset_info.assign_shards(tasks, shards_per_split)
  processed = (
    pipeline
    | "ListClips" >> beam.Create([(t.split, t.clip_id, t.path, shard) for t, shard in zip(tasks, shards)])
    | "SpreadClips" >> beam.Reshuffle()
    | "ProcessClip" >> beam.ParDo(ProcessClipFn(config, progress_dir))
  )
  # One empty element per shard: a shard whose clips were all skipped (or that got none) is still written.
  every_shard = pipeline | "ListShards" >> beam.Create(
    [((split, i), None) for split, count in sorted(shards_per_split.items()) for i in range(count)]
  )
  return (
    (processed, every_shard)
    | "Merge" >> beam.Flatten()
    | "GroupByShard" >> beam.GroupByKey()
    | "WriteShard" >> beam.ParDo(WriteShardFn(staging_dir, shards_per_split))
  )


def _make_pipeline(job: JobOptions, pipeline_args: Sequence[str], workers: int, verbosity: int):
  """A beam.Pipeline for `job.runner`; the DirectRunner case picks its runner explicitly (no Prism)."""
  if job.runner not in DIRECT_RUNNERS:  # e.g. Dataflow: its workers log as that runner configures them
    return beam.Pipeline(options=PipelineOptions(list(pipeline_args or []), runner=job.runner))
  from apache_beam.portability.api import beam_provision_api_pb2
  from apache_beam.runners.portability.fn_api_runner import fn_runner
  from apache_beam.runners.portability.portable_runner import JobServiceHandle
  from apache_beam.transforms import environments

  environment = None
  mode = job.direct_running_mode
  if mode == "multi_processing":
    # Our own worker command (Beam's hard-coded one logs ~15 lines per worker to stderr). FnApiRunner keeps
    # a given environment only when the options' running mode is not multi_processing; 'in_memory' with N
    # workers and a subprocess environment runs N worker processes.
    environment = environments.SubprocessSDKEnvironment.from_command_string(
      f"{sys.executable} -m {WORKER_MODULE}"
    )
    mode = "in_memory"
  kwargs = dict(
    runner="FnApiRunner",
    direct_num_workers=workers,
    direct_running_mode=mode,
    default_sdk_harness_log_level="INFO" if verbosity >= 1 else "ERROR",
  )
  if verbosity >= 1:
    kwargs["sdk_harness_log_level_overrides"] = {"apache_beam": "INFO"}
  options = PipelineOptions(list(pipeline_args or []), **kwargs)
  provision_info = fn_runner.ExtendedProvisionInfo(
    beam_provision_api_pb2.ProvisionInfo(
      pipeline_options=JobServiceHandle.encode_pipeline_options(options.get_all_options())
    )
  )
  runner = fn_runner.FnApiRunner(default_environment=environment, provision_info=provision_info)
  return beam.Pipeline(runner=runner, options=options)


# ---------------------------------------------------------------------------------------------------------
# The output directory: staging, commit.
# ---------------------------------------------------------------------------------------------------------


def _list_shards(directory: str) -> list[str]:
  """Names (not paths) of the shard files in `directory` that follow records.SHARD_PATTERN."""
  return [n for n in fs.listdir(directory) if records.SHARD_PATTERN.match(n)]


def _index_splits(directory: str) -> list[str]:
  """Splits that have an index file (index-{split}.json) in `directory`."""
  found = [shard_index.INDEX_PATTERN.match(n) for n in fs.listdir(directory)]
  return sorted(m["split"] for m in found if m)


def _read_staged(staging_dir: str, new_shards: Sequence[str]) -> tuple[dict, list[dict]]:
  """The shard sink's sidecars: ({split: [ShardEntry, ...]}, per-clip reports). A missing one: error."""
  entries: dict[str, list[shard_index.ShardEntry]] = {}
  reports: list[dict] = []
  missing = []
  for name in new_shards:
    path = os.path.join(staging_dir, _meta_name(name))
    if not fs.exists(path) or not fs.exists(os.path.join(staging_dir, name)):
      missing.append(name)
      continue
    with fs.open(path) as f:
      meta = json.load(f)
    entry = shard_index.ShardEntry.from_json(meta["entry"])
    entries.setdefault(records.SHARD_PATTERN.match(name)["split"], []).append(entry)
    reports.extend(meta["reports"])
  if missing:
    raise RuntimeError(f"the pipeline finished but did not write {missing}; the output was left unchanged")
  return entries, reports


def _commit(
  staging_dir: str,
  out_dir: str,
  entries: dict[str, list[shard_index.ShardEntry]],
  new_shards: list[str],
  overwrite: bool,
) -> list[str]:
  """Moves the new shards into out_dir, deletes stale shards of the rewritten splits (all splits with
  `overwrite`), writes the rewritten splits' index files; returns the deleted shard names.

  Index files of the rewritten splits are deleted first and written last: a commit that dies half way
  leaves shards without an index (read by scanning), never an index that describes other bytes."""
  written_splits = sorted(entries)
  replaced = [s for s in _index_splits(out_dir) if overwrite or s in written_splits]
  for split in replaced:
    fs.remove(shard_index.index_path(out_dir, split), missing_ok=True)
  for name in new_shards:
    fs.move(os.path.join(staging_dir, name), os.path.join(out_dir, name))  # replaces a same-named shard
  new = set(new_shards)
  stale = [
    n
    for n in _list_shards(out_dir)
    if n not in new and (overwrite or records.SHARD_PATTERN.match(n)["split"] in written_splits)
  ]
  for name in stale:
    fs.remove(os.path.join(out_dir, name))
  for split in written_splits:
    shard_index.write(out_dir, split, entries[split])
  return stale


def _remove_tree(path: str) -> None:
  """Deletes a staging folder (best effort: a leftover is harmless and reported by the next run)."""
  try:
    fs.rmtree(path)
  except Exception as e:  # noqa: BLE001 - cleanup must not hide the run's own result or error
    LOG.warning("could not remove the staging folder %s: %s", path, e)


def _usable_cores() -> int:
  try:
    return len(os.sched_getaffinity(0)) or 1
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def _counters(result) -> dict:
  """The 'preprocess' Beam counters of a finished pipeline (empty where the runner does not report them)."""
  try:
    found = result.metrics().query(MetricsFilter().with_namespace(COUNTER_NAMESPACE))["counters"]
  except Exception:  # noqa: BLE001 - metrics are informative only; some runners do not support queries
    return {}
  out = {}
  for counter in found:
    value = counter.committed if counter.committed is not None else counter.attempted
    out[counter.key.metric.name] = out.get(counter.key.metric.name, 0) + int(value or 0)
  return dict(sorted(out.items()))


# ---------------------------------------------------------------------------------------------------------
# Entry points.
# ---------------------------------------------------------------------------------------------------------


def _split_options(options: dict) -> tuple[PreprocessConfig, JobOptions]:
  config_fields = {f.name for f in dataclasses.fields(PreprocessConfig)}
  job_fields = {f.name for f in dataclasses.fields(JobOptions)}
  unknown = sorted(set(options) - config_fields - job_fields)
  if unknown:
    raise TypeError(
      f"preprocess.run got unknown options {unknown}; per-clip options are the fields of "
      f"PreprocessConfig {sorted(config_fields)}, job options those of JobOptions "
      f"{sorted(job_fields)}"
    )
  config = PreprocessConfig(**{k: v for k, v in options.items() if k in config_fields})
  job = JobOptions(**{k: v for k, v in options.items() if k in job_fields})
  return config, job


def run(
  out_dir: str,
  input_glob: str | None = None,
  filelist: str | Sequence[str] | None = None,
  data_root: str | None = None,
  *,
  split: str | None = None,
  pipeline_args: Sequence[str] = (),
  progress: bool = True,
  verbosity: int = 0,
  **options,
) -> dict:
  """Preprocesses videos into TFRecord shards + dataset_info.json in `out_dir`; returns the info dict.

  Input: `input_glob` ('DIR/**/*.mp4'; `split` or the path gives the split), or `filelist` (one path or a
  list; split = file stem) with `data_root`, or `data_root` alone (its train/val/test.txt).
  `options`: any PreprocessConfig field (img_size=96, detector='haar', detector_kwargs={'box': (x1, y1,
  x2, y2)} for detector='fixed', pads, ...) or JobOptions field (num_shards=0: one shard per
  `clips_per_shard` clips; limit > 0: only the first `limit` clips; direct_num_workers=0: the cores this
  process may use; ...). `pipeline_args` go to Beam's PipelineOptions unchanged.
  """
  config, job = _split_options(options)
  config.make_detector()  # fail fast on a bad detector / missing box, before listing or starting Beam

  tasks, duplicates = clips.dedupe(clips.list_tasks(input_glob, filelist, data_root, split))
  if job.limit:
    tasks = tasks[: job.limit]
  if not tasks:
    raise ValueError(
      f"no input videos found (input={input_glob!r}, filelist={filelist!r}, data_root={data_root!r})"
    )
  local_out = not fs.is_remote(out_dir)
  fs.makedirs(out_dir)
  previous = dataset_info.read(out_dir)
  dataset_info.check_compatible(previous, config, out_dir, job.overwrite)
  # (An object store has no empty directories: a new gs:// --out does not exist until the commit.)
  existing = fs.listdir(out_dir) if fs.isdir(out_dir) else []
  leftovers = [os.path.join(out_dir, n) for n in existing if n.startswith(_STAGING_PREFIX)]
  if leftovers:
    LOG.warning(
      "found staging folders of earlier unfinished runs in %s (safe to delete if no other run "
      "is writing there): %s",
      out_dir,
      leftovers,
    )

  per_split: dict[str, int] = {}
  for task in tasks:
    per_split[task.split] = per_split.get(task.split, 0) + 1
  shards_per_split = dataset_info.shards_per_split(per_split, job.num_shards, job.clips_per_shard)
  direct = job.runner in DIRECT_RUNNERS
  workers = job.direct_num_workers or _usable_cores()
  if job.direct_running_mode == "in_memory":
    workers = 1
  LOG.info(
    "preprocess: %d clips %s -> %s (%s)",
    len(tasks),
    per_split,
    out_dir,
    f"{workers} {job.direct_running_mode} workers" if direct else job.runner,
  )

  staging_dir = os.path.join(
    out_dir, f"{_STAGING_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
  )
  fs.makedirs(staging_dir)
  progress_files, progress_tmp = None, None
  if direct:  # workers count finished clips in files of a local folder (a gs:// --out: a temporary one)
    progress_tmp = None if local_out else tempfile.mkdtemp(prefix="lipsync_jax_progress_")
    progress_files = _ProgressFiles(
      progress_tmp or os.path.join(staging_dir, "_progress"),
      Progress(len(tasks), "preprocess", enabled=progress),
    )
  start = time.time()
  try:
    pipeline = _make_pipeline(job, pipeline_args, workers, verbosity)
    build_pipeline(
      pipeline,
      tasks,
      staging_dir,
      config,
      shards_per_split,
      progress_files.folder if progress_files else None,
    )
    result = pipeline.run()
    state = result.wait_until_finish()
    if progress_files is not None:
      progress_files.close()
      progress_files = None
    if state not in (None, beam.runners.runner.PipelineState.DONE):
      raise RuntimeError(f"the Beam pipeline ended in state {state}; {out_dir} was left unchanged")
    elapsed = time.time() - start
    new_shards = sorted(records.shard_name(s, i, n) for s, n in shards_per_split.items() for i in range(n))
    entries, reports = _read_staged(staging_dir, new_shards)
    reports += duplicates
    run_meta = dict(
      runner=job.runner,
      num_inputs=len(tasks),
      seconds=round(elapsed, 2),
      counters=_counters(result),
      clips_per_second=round(len(tasks) / elapsed, 3),
      direct_num_workers=workers if direct else None,
      direct_running_mode=job.direct_running_mode if direct else None,
      finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    info = dataset_info.build(config, reports, shards_per_split, previous, job.overwrite, run_meta)
    stale = _commit(staging_dir, out_dir, entries, new_shards, job.overwrite)
    if stale:
      LOG.info("preprocess: removed %d shards of an earlier run: %s", len(stale), stale)
    dataset_info.write(out_dir, info)
  finally:
    if progress_files is not None:
      progress_files.close()
    if progress_tmp is not None:
      shutil.rmtree(progress_tmp, ignore_errors=True)
    _remove_tree(staging_dir)
  LOG.info(
    "preprocess: %d clips written, %d skipped %s in %.1f s (%.2f clips/s) -> %s",
    info["num_clips"],
    info["num_skipped"],
    info["skipped_by_reason"],
    elapsed,
    len(tasks) / elapsed,
    out_dir,
  )
  return info


def _parse_box(text: str) -> tuple:
  values = [int(v) for v in text.replace(",", " ").split()]
  if len(values) != 4:
    raise argparse.ArgumentTypeError(f"--fixed_box needs 4 integers x1,y1,x2,y2, got {text!r}")
  return tuple(values)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="python -m data_pipelines.preprocess",
    description=__doc__.split("\n\n")[0],
    epilog="Unrecognised flags (e.g. --project, --region, --temp_location) go to Apache Beam.",
    formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  src = parser.add_argument_group("input (one of)")
  src.add_argument("--input", help="glob of videos, e.g. 'DIR/**/*.mp4' (quote it)")
  src.add_argument("--filelist", nargs="+", help="LRS2-style filelist(s); split = file stem")
  src.add_argument(
    "--data_root", help="root the filelist lines are relative to (alone: uses its train/val/test.txt)"
  )
  src.add_argument("--split", help="split for --input (default: from the path, else train)")
  parser.add_argument("--out", required=True, help="output directory for shards and dataset_info.json")
  per_clip = parser.add_argument_group("per clip (lipsync_jax.data.clips.PreprocessConfig)")
  clips.add_flags(per_clip, PreprocessConfig)
  per_clip.add_argument("--fixed_box", type=_parse_box, help="x1,y1,x2,y2 for --detector fixed")
  clips.add_flags(parser.add_argument_group("job"), JobOptions)
  logs.add_verbosity_flag(parser)  # 1: Beam's and its workers' logs too
  return parser


def main(argv: Sequence[str] | None = None) -> dict:
  parser = _parser()
  args, beam_args = parser.parse_known_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
  logs.setup(args.verbosity)
  options = clips.flag_values(PreprocessConfig, args) | clips.flag_values(JobOptions, args)
  if args.detector == "fixed":
    if args.fixed_box is None:
      parser.error("--detector fixed needs --fixed_box x1,y1,x2,y2")
    options["detector_kwargs"] = {"box": args.fixed_box}
  try:
    info = run(
      args.out,
      input_glob=args.input,
      filelist=args.filelist,
      data_root=args.data_root,
      split=args.split,
      pipeline_args=beam_args,
      verbosity=args.verbosity,
      **options,
    )
  except ValueError as e:  # bad input / settings: one clear line, no traceback
    parser.exit(2, f"{parser.prog}: error: {e}\n")
  summary = {k: info[k] for k in ("num_clips", "num_skipped", "skipped_by_reason")}
  summary["splits"] = {s: v["num_clips"] for s, v in info["splits"].items()}
  summary["seconds"] = info["last_run"]["seconds"]
  print(json.dumps(summary))
  return info


if __name__ == "__main__":
  # Run through the importable module so Beam workers (other processes) resolve its classes by name.
  from data_pipelines import preprocess as _module

  _module.main()
