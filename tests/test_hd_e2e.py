"""Issue 12's "not done until", at tiny width and a few steps: on an empty cache, every step a user's command.

`python -m lipsync_jax.main --config=configs/expert.py:hd192_tiny` (builds the HD demo corpus, rendered at
256 px, into the fresh cache, and trains a 192 expert) -> `python -m lipsync_jax.main
--config=configs/gan.py:hd192_tiny --config.expert_checkpoint=E` (the tiny variant's 'random-init' expert
overridden by E) -> `python -m lipsync_jax.infer` with the GAN workdir on a 256 px demo clip -> a 192 result.
"""

from __future__ import annotations

import json
import os

import numpy as np
from conftest import run_module

from lipsync_jax import weights

SIZE = 192
# One step each, no evaluation (its programs would be compiled for nothing here), checkpoint at the end.
FEW_STEPS = [
  "--config.num_train_steps=1",
  "--config.eval_batches=0",
  "--config.checkpoint_every_steps=1",
  "--config.data.demo_num_clips=12",
]


def test_hd192_expert_then_gan_then_infer_on_a_fresh_cache(tmp_path):
  from lipsync_jax.data import demo
  from lipsync_jax.inference.lipsync import mel_chunk_starts
  from lipsync_jax.media import video

  cache = tmp_path / "cache"
  env = dict(os.environ, JAX_PLATFORMS="cpu", LIPSYNC_JAX_CACHE=str(cache), LIPSYNC_JAX_COMPILE_CACHE="0")
  env.pop("XLA_FLAGS", None)  # one CPU device, as a user runs it (not the test session's 8 fake devices)
  expert_dir, gan_dir = str(tmp_path / "E"), str(tmp_path / "G")

  run_module(
    "lipsync_jax.main",
    "--config=configs/expert.py:hd192_tiny",
    f"--workdir={expert_dir}",
    *FEW_STEPS,
    env=env,
  )
  _, expert_meta = weights.load(expert_dir, "syncnet")
  assert expert_meta["img_size"] == SIZE and expert_meta["step"] == 1, expert_meta

  proc = run_module(
    "lipsync_jax.main",
    "--config=configs/gan.py:hd192_tiny",
    f"--workdir={gan_dir}",
    f"--config.expert_checkpoint={expert_dir}",
    *FEW_STEPS,
    env=env,
    timeout=900,
  )
  log = proc.stdout + proc.stderr
  assert "RANDOMLY INITIALISED" not in log, log[-3000:]
  assert f"frozen expert: {os.path.abspath(expert_dir)}" in log, log[-3000:]
  _, gan_meta = weights.load(gan_dir, "wav2lip")
  assert gan_meta["img_size"] == SIZE and gan_meta["step"] == 1, gan_meta

  # The HD demo corpus the two runs shared: 256 px videos, 192 px crops (one build, in the fresh cache).
  raw_dir, shards_dir = demo.demo_paths(str(cache), 12, SIZE, 0, frame_size=256)
  with open(os.path.join(shards_dir, "dataset_info.json")) as f:
    assert json.load(f)["img_size"] == SIZE
  with open(os.path.join(raw_dir, "corpus_info.json")) as f:
    assert json.load(f)["args"]["frame_size"] == 256  # rendered at 4/3 of the crop size
  with open(os.path.join(raw_dir, "test.txt")) as f:
    face = os.path.join(raw_dir, f.readline().strip() + ".mp4")
  source = video.probe(face)
  assert (source.width, source.height) == (256, 256)

  out = str(tmp_path / "result.mp4")
  args = ["--face", face, "--audio", face, "--checkpoint", gan_dir, "--out", out]
  run_module("lipsync_jax.infer", *args, "--detector", "haar", "--no_progress", env=env)  # one batch shape
  info = video.probe(out)
  assert info.has_audio and (info.width, info.height) == (256, 256)
  mel_steps = 1 + len(video.read_audio(face, sr=16000)) * 80 // 16000  # one output frame per mel chunk
  assert info.num_frames == len(mel_chunk_starts(mel_steps, source.fps)), (info, source)
  before = np.stack(list(video.iter_frames(face))[: info.num_frames]).astype(int)
  after = np.stack(list(video.iter_frames(out))[: len(before)]).astype(int)
  assert np.abs(before - after).mean() > 0.5  # the generated lower faces were pasted in
