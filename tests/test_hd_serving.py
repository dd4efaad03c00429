"""HD (192 px faces) from the data to the served model, on the synthetic corpus rendered at 256 px.

Preprocessing at --img_size 192 (the Beam CLI) and the input pipeline's batch shapes; the detector and the face
track unchanged by the crop size; the weights loader telling a tree's face size; `python -m lipsync_jax.infer`
with a tiny 192 generator (a variables dir, an official-format .pth, and a jax.export artifact); export /
serving at 192 equal to the model; sync scoring with a 192 expert and LSE on a 192 result video. Tiny widths
(1/32) keep every network cheap; the 288 checks are the ones that cost no run of a network.
"""

from __future__ import annotations

import functools
import json
import os

import jax
import numpy as np
import pytest

from lipsync_jax import compile_cache, evaluate, infer, weights
from lipsync_jax.data import clips, records, synthetic
from lipsync_jax.inference import export, serving
from lipsync_jax.inference.lipsync import ExportedGenerator, Generator, mel_chunk_starts
from lipsync_jax.media import video

SIZE = 192
FRAME_SIZE = 256  # the rendered video side: 192 px crops are not upscaled from it
WIDTH = 1 / 32
SECONDS = 1.2  # 30 frames per clip


@pytest.fixture(autouse=True)
def _compile_cache_in_tmp(tmp_path, monkeypatch):
  """The CLIs turn on jax's persistent compilation cache: keep it out of the user's cache dir."""
  monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "jax_compile"))
  yield
  compile_cache.disable()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
  raw = str(tmp_path_factory.mktemp("raw256"))
  synthetic.make_corpus(raw, num_clips=6, seconds=SECONDS, frame_size=FRAME_SIZE, workers=1, progress=False)
  return raw


@pytest.fixture(scope="module")
def face_clip(corpus) -> str:
  """One 256 px talking-face clip of the corpus (its own audio is the speech to lip-sync)."""
  with open(os.path.join(corpus, "test.txt")) as f:
    return os.path.join(corpus, f.readline().strip() + ".mp4")


@pytest.fixture(scope="module")
def shards(corpus, tmp_path_factory) -> str:
  from data_pipelines import preprocess

  out = str(tmp_path_factory.mktemp("shards") / "hd192")
  preprocess.main(
    [
      "--data_root",
      corpus,
      "--out",
      out,
      "--img_size",
      str(SIZE),
      "--detector",
      "haar",
      "--direct_num_workers",
      "1",
      "--direct_running_mode",
      "in_memory",
    ]
  )
  return out


def _init(kind: str, size: int = SIZE, seed: int = 0) -> dict:
  """Tiny-width variables of `kind` at face size `size`, with non-trivial BatchNorm running statistics."""
  from lipsync_jax.models import MODELS, example_inputs

  model = MODELS[kind](width_multiplier=WIDTH)
  init = jax.jit(model.init)  # one compile: much quicker than Flax's init op by op
  variables = jax.tree.map(np.asarray, init(jax.random.key(seed), *example_inputs(kind, 1, size)))
  rng = np.random.default_rng(seed)
  stats = {
    path: (rng.uniform(0.5, 1.5, v.shape) if path[-1] == "var" else rng.normal(0, 0.1, v.shape)).astype(
      np.float32
    )
    for path, v in weights.flatten(variables["batch_stats"]).items()
  }
  return {"params": variables["params"], "batch_stats": weights.unflatten(stats)}


@pytest.fixture(scope="module")
def generator() -> tuple[dict, dict]:
  return _init("wav2lip"), {"kind": "wav2lip", "width_multiplier": WIDTH, "img_size": SIZE}


# ---------------------------------------------------------------------------------------------------------
# Data.
# ---------------------------------------------------------------------------------------------------------


def test_preprocess_at_192_stores_192_crops_and_the_pipeline_batches_them(shards):
  from lipsync_jax.data import pipeline, tfrecord

  with open(os.path.join(shards, "dataset_info.json")) as f:
    info = json.load(f)
  assert info["img_size"] == SIZE and info["num_clips"] >= 4, info
  clip = records.parse_example(tfrecord.ClipRecords.for_split(shards, "train")[0].data)
  assert clip.img_size == SIZE
  frame = clip.frame(0)
  assert frame.shape == (SIZE, SIZE, 3) and frame.dtype == np.uint8 and frame.std() > 5

  it = pipeline.make_train_iterator(shards, "train", "expert", 4, seed=0, num_threads=0)
  batch = next(it)
  assert batch["faces"].shape == (4, SIZE // 2, SIZE, 15) and batch["faces"].dtype == np.uint8
  assert batch["mel"].shape == (4, 80, 16, 1) and batch["label"].shape == (4, 1)
  it = pipeline.make_train_iterator(shards, "train", "generator", 4, seed=0, num_threads=0)
  batch = next(it)
  assert batch["inputs"].shape == (4, 5, SIZE, SIZE, 6)
  assert batch["gt"].shape == (4, 5, SIZE, SIZE, 3)
  assert batch["indiv_mels"].shape == (4, 5, 80, 16, 1) and batch["mel"].shape == (4, 80, 16, 1)
  # The masked half of the input is black, the reference half is a face.
  assert batch["inputs"][..., SIZE // 2 :, :, :3].max() == 0 and batch["inputs"][..., 3:].std() > 5


def test_detector_and_track_do_not_depend_on_the_crop_size(face_clip, corpus):
  """Only the crop size changes with --img_size: the same boxes, and the 192 crop is the 96 crop's scene."""
  import cv2

  task = clips.ClipTask(path=face_clip, clip_id="c", split="test")
  small, _ = clips.process_clip(task, clips.PreprocessConfig(img_size=96, detector="haar"))
  large, _ = clips.process_clip(task, clips.PreprocessConfig(img_size=SIZE, detector="haar"))
  np.testing.assert_array_equal(small.boxes, large.boxes)
  assert large.frames.shape == (len(small.frames), SIZE, SIZE, 3)
  # The same box crop, resized to 96: within a few grey levels of the 96 crop (interpolation only).
  down = np.stack([cv2.resize(f, (96, 96), interpolation=cv2.INTER_AREA) for f in large.frames])
  assert np.abs(down.astype(int) - small.frames.astype(int)).mean() < 6


# ---------------------------------------------------------------------------------------------------------
# Weights: the tree tells its face size.
# ---------------------------------------------------------------------------------------------------------


def test_variables_tell_their_face_size_through_every_weights_source(tmp_path, generator):
  from lipsync_jax import convert

  variables, _ = generator
  assert weights.infer_img_size("wav2lip", variables) == SIZE
  # 288 and the other kinds: shapes only (jax.eval_shape), no network runs.
  assert weights.img_sizes() == (96, 192, 288)
  for kind, size in (("syncnet", 288), ("disc", 192)):
    template = weights.variables_template(kind, WIDTH, size)
    assert weights.infer_img_size(kind, template) == size, (kind, size)
  var_dir = weights.save_variables(tmp_path / "vars", variables, "wav2lip")  # no meta given
  assert weights.load(var_dir, "wav2lip")[1]["img_size"] == SIZE
  pth = str(tmp_path / "hd192.pth")  # official-format file of a 192 network (its keys tell the size)
  convert.save_torch_checkpoint(pth, "wav2lip", variables)
  loaded, meta = weights.load(pth, "wav2lip")
  assert meta["img_size"] == SIZE and meta["width_multiplier"] == WIDTH
  for path, leaf in weights.flatten(variables).items():
    np.testing.assert_array_equal(weights.flatten(loaded)[path], leaf)
  assert convert.main(["--kind", "wav2lip", "--src", pth, "--dst", str(tmp_path / "conv")]) == 0
  assert weights.load(str(tmp_path / "conv"), "wav2lip")[1]["img_size"] == SIZE
  wrong_size = ["--kind", "wav2lip", "--src", pth, "--dst", str(tmp_path / "x"), "--img_size", "96"]
  assert convert.main(wrong_size) == 2
  odd = {"params": {"face_encoder_0": {"conv": {"kernel": np.zeros((3, 3, 15, 1), np.float32)}}}}
  with pytest.raises(weights.CheckpointError, match="no 'syncnet' network"):
    weights.infer_img_size("syncnet", odd)


# ---------------------------------------------------------------------------------------------------------
# Export and serving at 192.
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(generator, tmp_path_factory) -> str:
  """The 192 generator as a jax.export artifact (symbolic batch; lowered for cpu only, to keep it quick)."""
  variables, meta = generator
  out = str(tmp_path_factory.mktemp("export") / "gen")
  written = export.export_model(variables, meta, out, "wav2lip", batch="symbolic", platforms=["cpu"])
  assert written["img_size"] == SIZE and written["batch"] == "symbolic"
  return out


def test_export_and_serving_at_192_equal_the_model(generator, exported):
  from lipsync_jax.models import Wav2Lip

  variables, _ = generator
  with open(os.path.join(exported, export.META_FILE)) as f:
    assert json.load(f)["img_size"] == SIZE
  served = serving.load(exported)
  assert served.img_size == SIZE
  rng = np.random.default_rng(1)
  mel = rng.normal(size=(2, 80, 16, 1)).astype(np.float32)
  faces = rng.uniform(size=(2, SIZE, SIZE, 6)).astype(np.float32)
  want = jax.jit(functools.partial(Wav2Lip(width_multiplier=WIDTH).apply, train=False))(variables, mel, faces)
  got = served(mel, faces)
  assert got.shape == (2, SIZE, SIZE, 3)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_exported_generator_gives_the_generator_frames(generator, exported):
  """The artifact on the lip-sync pipeline's uint8 interface == the Flax generator (BN folded both ways)."""
  variables, meta = generator
  served = ExportedGenerator(serving.load(exported), batch_size=4)
  direct = Generator(variables, meta, batch_size=4)
  assert served.img_size == direct.img_size == SIZE
  rng = np.random.default_rng(2)
  mels = rng.normal(size=(3, 80, 16)).astype(np.float32)
  crops = rng.integers(0, 256, size=(3, SIZE, SIZE, 3), dtype=np.uint8)
  got, want = served(mels, crops), direct(mels, crops)
  assert got.shape == (3, SIZE, SIZE, 3) and got.dtype == np.uint8
  assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


# ---------------------------------------------------------------------------------------------------------
# Inference, sync scoring and LSE at 192.
# ---------------------------------------------------------------------------------------------------------


def _mouth_change(face_clip: str, result: str) -> tuple[float, float]:
  """Mean absolute change between input and result frames: (in the lower-face box, outside it)."""
  boxes = np.load(face_clip[: -len(".mp4")] + ".boxes.npy")
  before = list(video.iter_frames(face_clip))
  after = list(video.iter_frames(result))
  n = min(len(before), len(after))
  inside, outside = [], []
  for i in range(n):
    x1, y1, x2, y2 = (int(v) for v in boxes[min(i, len(boxes) - 1)])
    diff = np.abs(before[i].astype(int) - after[i].astype(int)).mean(-1)
    mask = np.zeros(diff.shape, bool)
    mask[(y1 + y2) // 2 : y2, x1:x2] = True
    inside.append(diff[mask].mean())
    far = np.ones(diff.shape, bool)
    far[max(0, y1 - 20) : y2 + 30, max(0, x1 - 20) : x2 + 20] = False
    outside.append(diff[far].mean())
  return float(np.mean(inside)), float(np.mean(outside))


@pytest.fixture(scope="module")
def result_192(tmp_path_factory, generator, exported, face_clip) -> dict:
  """`python -m lipsync_jax.infer` (its main) with a 192 variables dir and with its export artifact."""
  variables, _ = generator
  tmp = tmp_path_factory.mktemp("infer192")
  var_dir = weights.save_variables(tmp / "vars", variables, "wav2lip")
  outs = {}
  for name, ckpt in (("variables", var_dir), ("export", exported)):
    outs[name] = str(tmp / f"{name}.mp4")
    stats_json = str(tmp / f"{name}.json")
    argv = ["--face", face_clip, "--audio", face_clip, "--checkpoint", ckpt, "--out", outs[name]]
    argv += ["--detector", "haar", "--batch_size", "8", "--no_progress", "--stats_json", stats_json]
    assert infer.main(argv) == 0
    with open(stats_json) as f:
      outs[name + "_stats"] = json.load(f)
  return outs


def test_infer_at_192_writes_a_lip_synced_mp4(result_192, face_clip):
  import av

  source = video.probe(face_clip)
  mel_steps = 1 + int(SECONDS * 16000) * 80 // 16000
  for name in ("variables", "export"):
    out = result_192[name]
    info = video.probe(out)
    assert info.has_audio and (info.width, info.height) == (FRAME_SIZE, FRAME_SIZE)
    assert info.num_frames == len(mel_chunk_starts(mel_steps, 25)) == result_192[name + "_stats"]["frames"]
    assert abs(info.fps - source.fps) < 1e-3
    with av.open(out) as container:  # PyAV opens it: one H.264 video and one AAC audio stream
      assert [s.type for s in container.streams] == ["video", "audio"]
      assert container.streams.video[0].codec_context.name == "h264"
      assert container.streams.audio[0].codec_context.name == "aac"
    inside, outside = _mouth_change(face_clip, out)
    assert inside > 5 * outside and inside > 3, (name, inside, outside)
  # The artifact and the checkpoint it came from give the same video (up to H.264 on +-1 frames).
  a = np.stack(list(video.iter_frames(result_192["variables"]))).astype(int)
  b = np.stack(list(video.iter_frames(result_192["export"]))).astype(int)
  assert np.abs(a - b).mean() < 0.5


def test_sync_scoring_with_a_192_expert_and_lse_on_a_192_result(tmp_path, result_192, face_clip, capsys):
  import torch
  from syncnet_v2_reference import SyncNetV2Torch, randomize_batch_norm

  expert_dir = weights.save_variables(tmp_path / "expert", _init("syncnet", seed=3), "syncnet")
  assert weights.load(expert_dir, "syncnet")[1]["img_size"] == SIZE
  out = str(tmp_path / "sync.json")
  # The tiny random generator paints no face Haar would find: the clip's own (median) box, as --box.
  x1, y1, x2, y2 = np.median(np.load(face_clip[: -len(".mp4")] + ".boxes.npy"), 0).astype(int)
  box = [str(v) for v in (y1, y2, x1, x2)]
  rc = evaluate.main(
    ["sync", "--video", result_192["variables"], "--expert", expert_dir, "--box", *box, "--json", out]
  )
  assert rc == 0, capsys.readouterr().err
  with open(out) as f:
    result = json.load(f)
  frames = video.probe(result_192["variables"]).num_frames
  assert result["windows"] == frames - 4 and all(-1e-6 <= p <= 1 + 1e-6 for p in result["sync_prob"])

  torch.manual_seed(0)
  syncnet_v2 = str(tmp_path / "syncnet_v2.model")
  torch.save(randomize_batch_norm(SyncNetV2Torch(width=0.0625), 0).eval().state_dict(), syncnet_v2)
  lse_json = str(tmp_path / "lse.json")
  argv = ["lse", "--videos", result_192["variables"], "--syncnet", syncnet_v2, "--json", lse_json]
  assert evaluate.main([*argv, "--batch_size", "8"]) == 0, capsys.readouterr().err
  with open(lse_json) as f:
    lse = json.load(f)
  assert not lse["failed"] and lse["videos"][0]["windows"] > 10
  assert np.isfinite(lse["videos"][0]["lse_d"]) and -15 <= lse["videos"][0]["offset"] <= 15
