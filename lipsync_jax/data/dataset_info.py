"""dataset_info.json: what a shards directory holds and how it was made.

Owns the file's content (`build`), reading it (`read`), writing it atomically (`write`;
`write_text_atomically` also writes the shard index), the settings-compatibility rule (`check_compatible`):
shards of one directory must share img_size, frame format, fps and audio hparams, and how a run's clips are
laid out in shards (`shards_per_split`, `assign_shards`). Shared by the Beam job (data_pipelines.preprocess) and the demo corpus builder
(lipsync_jax.data.demo), so both write the same content. Paths go through lipsync_jax.fs (gs:// works).

Content: format_version, created_by, img_size, frame_format, fps, audio (hparams), mel_steps_per_second,
num_mels, jpeg_quality, preprocess (every PreprocessConfig field), splits ({split: num_clips, num_frames,
num_skipped, num_damaged_clips, damaged_packets, num_shards, shards}), num_clips, num_skipped,
skipped_by_reason, skipped (split, clip_id, source, reason, detail; sorted), num_damaged_clips and
damaged_packets (written clips whose media had damage decoding skipped, and the total count of it;
lipsync_jax.media.video.DecodeReport.damage), damaged (split, clip_id, source, damaged_packets, first_error;
sorted), carried_over_splits (splits kept from an earlier run into the same directory), last_run (runner,
timings, counters: clips_written, frames_written, clips_damaged, damaged_packets, skipped_<reason>).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence

from lipsync_jax import fs, windows
from lipsync_jax.data import records
from lipsync_jax.data.clips import ClipTask, PreprocessConfig
from lipsync_jax.media import audio

INFO_FILE = "dataset_info.json"
FORMAT_VERSION = 1
COMPAT_KEYS = ("img_size", "frame_format", "fps", "audio")


def settings(config: PreprocessConfig) -> dict:
  """The settings every shard of one directory must share."""
  return dict(
    img_size=config.img_size,
    frame_format=config.frame_format,
    fps=float(windows.FPS),
    audio=audio.AUDIO_HPARAMS.as_dict(),
  )


def read(out_dir: str) -> dict | None:
  """The dataset_info.json of `out_dir`, or None when there is none."""
  path = os.path.join(out_dir, INFO_FILE)
  if not fs.exists(path):
    return None
  with fs.open(path) as f:
    return json.load(f)


def write_text_atomically(path: str, text: str) -> None:
  """Local: temp file + fsync + os.replace. Object stores (gs://): one object write (atomic there)."""
  if fs.is_remote(path):
    with fs.open(path, "w") as f:
      f.write(text)
    return
  tmp = f"{path}.tmp-{uuid.uuid4().hex}"
  try:
    with open(tmp, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write(out_dir: str, info: dict) -> str:
  """Writes `info` as out_dir/dataset_info.json atomically; returns its path."""
  path = os.path.join(out_dir, INFO_FILE)
  write_text_atomically(path, json.dumps(info, indent=1) + "\n")
  return path


def check_compatible(previous: dict | None, config: PreprocessConfig, out_dir: str, overwrite: bool) -> None:
  """Refuses (ValueError) to add shards made with other settings to `out_dir`, unless `overwrite`."""
  if previous is None or overwrite:
    return
  ours = json.loads(json.dumps(settings(config)))
  diffs = [k for k in COMPAT_KEYS if previous.get(k) != ours[k]]
  if diffs:
    raise ValueError(
      f"{out_dir} already holds a dataset made with different {diffs} "
      f"({ {k: previous.get(k) for k in diffs} } vs { {k: ours[k] for k in diffs} }); "
      "write to another --out, or pass --overwrite to replace it"
    )


def counters(reports: Sequence[dict]) -> dict[str, int]:
  """clips_written, frames_written, clips_damaged, damaged_packets and skipped_<reason> counts of per-clip
  reports (duplicates excluded, as in the Beam job's counters)."""
  out: dict[str, int] = {}
  for r in reports:
    if r["status"] == "written":
      out["clips_written"] = out.get("clips_written", 0) + 1
      out["frames_written"] = out.get("frames_written", 0) + int(r["num_frames"])
      if r.get("damaged_packets"):
        out["clips_damaged"] = out.get("clips_damaged", 0) + 1
        out["damaged_packets"] = out.get("damaged_packets", 0) + int(r["damaged_packets"])
    elif r["reason"] != "duplicate":
      key = f"skipped_{r['reason']}"
      out[key] = out.get(key, 0) + 1
  return dict(sorted(out.items()))


def _by_clip(report: dict) -> tuple[str, str]:
  return report["split"], report["clip_id"]


def _first_error(report: dict) -> str | None:
  """The first decode error of a written clip's report (audio first; None when it names none)."""
  errors = (d.get("first_error") for d in report.get("damage", {}).values())
  return next((e for e in errors if e), None)


def build(
  config: PreprocessConfig,
  reports: Sequence[dict],
  shards_per_split: dict[str, int],
  previous: dict | None,
  overwrite: bool,
  run_meta: dict,
  created_by: str = "data_pipelines.preprocess",
) -> dict:
  """The dataset_info dict of a run that wrote `shards_per_split` from per-clip `reports`.

  Splits this run did not write keep their entries from `previous` (unless `overwrite`).
  """
  splits = {}
  for split, count in sorted(shards_per_split.items()):
    written = [r for r in reports if r["split"] == split and r["status"] == "written"]
    splits[split] = dict(
      num_clips=len(written),
      num_frames=int(sum(r["num_frames"] for r in written)),
      num_skipped=sum(r["split"] == split and r["status"] == "skipped" for r in reports),
      num_damaged_clips=sum(bool(r.get("damaged_packets")) for r in written),
      damaged_packets=int(sum(r.get("damaged_packets", 0) for r in written)),
      num_shards=count,
      shards=[records.shard_name(split, i, count) for i in range(count)],
    )
  skipped = sorted((r for r in reports if r["status"] == "skipped"), key=_by_clip)
  damaged = [
    dict(
      split=r["split"],
      clip_id=r["clip_id"],
      source=r.get("source"),
      damaged_packets=int(r["damaged_packets"]),
      first_error=_first_error(r),
    )
    for r in sorted(reports, key=_by_clip)
    if r["status"] == "written" and r.get("damaged_packets")
  ]
  carried = {}
  if previous is not None and not overwrite:  # splits this run did not touch keep their entries
    carried = {s: v for s, v in previous.get("splits", {}).items() if s not in splits}
    splits.update(carried)
    skipped += [r for r in previous.get("skipped", []) if r.get("split") in carried]
    damaged += [r for r in previous.get("damaged", []) if r.get("split") in carried]
  by_reason: dict[str, int] = {}
  for r in skipped:
    by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
  return dict(
    format_version=FORMAT_VERSION,
    created_by=created_by,
    **settings(config),
    mel_steps_per_second=windows.MEL_STEPS_PER_SECOND,
    num_mels=windows.NUM_MELS,
    jpeg_quality=config.jpeg_quality if config.frame_format == "jpeg" else None,
    preprocess=config.as_dict(),
    splits=dict(sorted(splits.items())),
    num_clips=sum(s["num_clips"] for s in splits.values()),
    num_skipped=len(skipped),
    skipped_by_reason=dict(sorted(by_reason.items())),
    skipped=[{k: r.get(k) for k in ("split", "clip_id", "source", "reason", "detail")} for r in skipped],
    num_damaged_clips=sum(s.get("num_damaged_clips", 0) for s in splits.values()),
    damaged_packets=sum(s.get("damaged_packets", 0) for s in splits.values()),
    damaged=sorted(damaged, key=_by_clip),
    carried_over_splits=sorted(carried),
    last_run=run_meta,
  )


def shards_per_split(
  tasks_per_split: dict[str, int], num_shards: int = 0, clips_per_shard: int = 128
) -> dict[str, int]:
  """Shards of each split: `num_shards` if given, else ceil(clips / clips_per_shard) (at least 1)."""
  return {
    s: int(num_shards) if num_shards else max(1, -(-int(n) // int(clips_per_shard)))
    for s, n in sorted(tasks_per_split.items())
  }


def assign_shards(tasks: Sequence[ClipTask], shards_per_split: dict[str, int]) -> list[int]:
  """The shard of each task (same order): within its split, the task's rank r among the split's N tasks
  sorted by clip_id goes to shard r * num_shards // N. Contiguous runs of clip ids, shard sizes within one
  of each other (before skipped clips), and a pure function of the task list: the same inputs give the same
  shards on any runner, and the shards of a split concatenated are its clips in clip_id order."""
  ranks: dict[tuple[str, str], int] = {}
  counts: dict[str, int] = {}
  for task in sorted(tasks, key=lambda t: (t.split, t.clip_id)):
    ranks[task.split, task.clip_id] = counts.get(task.split, 0)
    counts[task.split] = counts.get(task.split, 0) + 1
  return [ranks[t.split, t.clip_id] * int(shards_per_split[t.split]) // counts[t.split] for t in tasks]
