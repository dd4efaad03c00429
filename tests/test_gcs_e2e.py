"""End to end on gs:// (a real GCS-API server on loopback, the gcs_dir fixture), every step a user's command:
raw videos in the bucket -> `python -m data_pipelines.preprocess` -> shards in the bucket -> tiny generator
training (`python -m lipsync_jax.main`, workdir, shards and frozen expert all gs://) -> checkpoint in the
bucket -> the same command with more steps resumes from it -> `python -m lipsync_jax.infer` with the
checkpoint, the face video, the audio and the output on gs://. The subprocesses inherit the emulator's
environment variables from the fixture."""

from __future__ import annotations

import os

import jax
import numpy as np
from conftest import run_module

from lipsync_jax import fs, weights

TRAIN = [
  "--config=configs/generator.py:tiny",
  "--config.eval_every_steps=2",
  "--config.checkpoint_every_steps=2",
]


def _upload_tree(local: str, remote: str) -> None:
  for directory, _, names in os.walk(local):
    for name in names:
      path = os.path.join(directory, name)
      fs.copy(path, f"{remote}/{os.path.relpath(path, local)}")


def _checkpoint_steps(workdir: str) -> list[int]:
  return sorted(int(n) for n in fs.listdir(f"{workdir}/checkpoints") if n.isdigit())


def test_preprocess_train_resume_infer_on_gcs(gcs_dir, tmp_path):
  from lipsync_jax.data import synthetic
  from lipsync_jax.models import SyncNet, example_inputs

  # Raw corpus (synthetic talking faces, LRS2-style file lists) uploaded to the bucket.
  raw = str(tmp_path / "raw")
  synthetic.make_corpus(raw, num_clips=6, seconds=1.2, workers=1, progress=False)
  _upload_tree(raw, f"{gcs_dir}/raw")

  # Preprocess: read from the bucket, shards into the bucket.
  shards = f"{gcs_dir}/shards"
  run_module(
    "data_pipelines.preprocess", "--data_root", f"{gcs_dir}/raw", "--out", shards, "--detector", "haar"
  )
  names = fs.listdir(shards)
  assert "dataset_info.json" in names and any(n.startswith("train-") for n in names), names

  # A frozen expert as a gs:// variables directory (config.expert_checkpoint).
  tiny = 1 / 32
  expert = SyncNet(width_multiplier=tiny).init(jax.random.key(0), *example_inputs("syncnet", 1, 96))
  expert_dir = weights.save_variables(f"{gcs_dir}/expert", jax.tree.map(np.asarray, expert), "syncnet")

  # Train 2 steps, then the same command with 4 steps resumes from the step-2 checkpoint.
  workdir = f"{gcs_dir}/gen"
  common = [
    f"--workdir={workdir}",
    f"--config.data.shards_dir={shards}",
    f"--config.expert_checkpoint={expert_dir}",
  ]
  run_module("lipsync_jax.main", *TRAIN, *common, "--config.num_train_steps=2")
  assert _checkpoint_steps(workdir) == [2]
  assert fs.isfile(f"{workdir}/config.json")
  second = run_module("lipsync_jax.main", *TRAIN, *common, "--config.num_train_steps=4", "--verbosity=1")
  assert _checkpoint_steps(workdir) == [2, 4]
  assert "at step 2" in second.stderr + second.stdout, second.stderr[-3000:]
  _, meta = weights.load(workdir, "wav2lip")
  assert meta["step"] == 4
  events = [n for n in fs.listdir(workdir) if n.startswith("events.out.tfevents.")]
  assert events, fs.listdir(workdir)  # TensorBoard through lipsync_jax.fs

  # Infer: checkpoint, face video, audio and output all on gs://.
  with open(os.path.join(raw, "train.txt")) as f:
    clip = f.readline().strip()
  face = f"{gcs_dir}/raw/{clip}.mp4"
  out = f"{gcs_dir}/results/out.mp4"
  run_module(
    "lipsync_jax.infer",
    "--face",
    face,
    "--audio",
    face,
    "--checkpoint",
    workdir,
    "--out",
    out,
    "--detector",
    "haar",
    "--batch_size",
    "8",
    "--no_progress",
    "--no_compile_cache",
  )
  from lipsync_jax.media import video

  with fs.local_copy(out) as local:
    info = video.probe(local)
  assert info.has_audio and info.num_frames >= 25
