"""Tests for lipsync_jax.evaluation + the evaluate CLI: offset math vs NumPy, SyncNet v2 parity with PyTorch,
the face track and fps rule in LSE, CLIs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from lipsync_jax import evaluate, weights
from lipsync_jax.evaluation import lse, offsets, recon, sync


def _reference_pdist(feat1, feat2, vshift):
  """Loop-per-window NumPy transcription of syncnet_python calc_pdist + evaluate()."""
  win = 2 * vshift + 1
  feat2p = np.concatenate([np.zeros((vshift, feat2.shape[1])), feat2, np.zeros((vshift, feat2.shape[1]))])
  dists = []
  for i in range(len(feat1)):
    diff = np.repeat(feat1[[i]], win, axis=0) - feat2p[i : i + win] + 1e-6
    dists.append(np.sqrt((diff**2).sum(axis=1)))
  mdist = np.mean(np.stack(dists, 1), 1)
  minidx = int(np.argmin(mdist))
  return np.stack(dists), vshift - minidx, float(np.median(mdist) - mdist[minidx]), float(mdist[minidx])


def test_offset_math_matches_numpy_reference():
  rng = np.random.default_rng(0)
  video, audio = rng.normal(size=(40, 16)), rng.normal(size=(40, 16))
  dists = offsets.offset_distances(video, audio, 15)
  ref_dists, offset, conf, min_dist = _reference_pdist(video, audio, 15)
  np.testing.assert_allclose(dists, ref_dists, rtol=1e-12)
  summary = offsets.summarize_offsets(dists, 15)
  assert summary["offset"] == offset
  assert summary["confidence"] == pytest.approx(conf)
  assert summary["min_dist"] == pytest.approx(min_dist)


@pytest.mark.parametrize("k", [-7, -2, 0, 3, 11])
def test_constructed_features_shifted_by_k_give_offset_k(k):
  rng = np.random.default_rng(1)
  base = rng.normal(size=(80, 32))
  video = base[20:60]
  audio = base[20 + k : 60 + k]  # audio feature v = video feature v + k: the audio leads by k frames
  summary = offsets.summarize_offsets(offsets.offset_distances(video, audio, 15), 15)
  # The convention: video v best matches audio v - offset (positive offset: the audio leads).
  assert summary["offset"] == k
  assert summary["confidence"] > 1.0


@pytest.mark.parametrize("k", [-4, 0, 5])
def test_expert_sync_offset_on_shifted_embeddings(k):
  rng = np.random.default_rng(2)
  base = rng.normal(size=(70, 24))
  base = np.abs(base) / np.linalg.norm(base, axis=1, keepdims=True)  # post-ReLU, L2-normalised like SyncNet
  face = base[15:55]
  audio = base[15 + k : 55 + k]  # the audio track advanced by k windows relative to the mouth
  result = sync.sync_from_embeddings(face, audio)
  assert result["offset"] == k
  assert result["confidence"] > 0.05
  assert len(result["sync_prob"]) == 40
  if k == 0:
    np.testing.assert_allclose(result["sync_prob"], 1.0, atol=1e-9)
  else:
    assert result["mean_sync_prob"] < 0.95


def test_num_lse_windows():
  assert lse.num_lse_windows(100, 100 * 640) == 95
  assert lse.num_lse_windows(100, 50 * 640 + 639) == 45
  assert lse.num_lse_windows(4, 10000) == 0


def test_mfcc_features_is_python_speech_features():
  import python_speech_features

  rng = np.random.default_rng(3)
  wav = (rng.normal(size=16000) * 0.1).astype(np.float32)
  got = lse.mfcc_features(wav)
  want = python_speech_features.mfcc(np.round(wav.astype(np.float64) * 32768), 16000).T
  assert got.shape == (13, 99)
  np.testing.assert_allclose(got, want, rtol=1e-10)


def _tiny_syncnet_file(tmp_path, width=0.0625, seed=0):
  import torch
  from syncnet_v2_reference import SyncNetV2Torch, randomize_batch_norm

  torch.manual_seed(seed)
  model = randomize_batch_norm(SyncNetV2Torch(width=width), seed).eval()
  path = os.path.join(tmp_path, "syncnet_v2.model")
  torch.save(model.state_dict(), path)
  return model, path


def test_syncnet_v2_parity_with_torch(tmp_path):
  import jax.numpy as jnp
  import torch

  from lipsync_jax.models.syncnet_v2 import SyncNetV2

  model, path = _tiny_syncnet_file(tmp_path)
  variables, meta = weights.load(path, "syncnet_v2")
  width = meta["width_multiplier"]
  assert width == pytest.approx(0.0625)
  rng = np.random.default_rng(4)
  mfcc = rng.normal(size=(2, 13, 20, 1)).astype(np.float32) * 5
  lips = rng.uniform(0, 255, size=(2, 5, 224, 224, 3)).astype(np.float32)
  with torch.no_grad():
    want_a = model.forward_aud(torch.from_numpy(mfcc).permute(0, 3, 1, 2)).numpy()
    want_v = model.forward_lip(torch.from_numpy(lips).permute(0, 4, 1, 2, 3)).numpy()
  got_a, got_v = SyncNetV2(width_multiplier=width).apply(
    variables, mfcc=jnp.asarray(mfcc), lips=jnp.asarray(lips)
  )
  assert got_a.shape == (2, 1024) and got_v.shape == (2, 1024)
  scale_a, scale_v = np.abs(want_a).max(), np.abs(want_v).max()
  np.testing.assert_allclose(np.asarray(got_a) / scale_a, want_a / scale_a, atol=1e-4)
  np.testing.assert_allclose(np.asarray(got_v) / scale_v, want_v / scale_v, atol=1e-4)


def test_syncnet_v2_full_size_key_names_match():
  """The full-width reference's state dict converts without missing/extra keys and gets the right shapes."""
  from syncnet_v2_reference import SyncNetV2Torch

  state = {k: v.numpy() for k, v in SyncNetV2Torch().state_dict().items()}
  variables = weights.torch_state_dict_to_variables("syncnet_v2", state)
  assert variables["params"]["netcnnlip_0"]["kernel"].shape == (5, 7, 7, 3, 96)
  assert variables["params"]["netcnnaud_18"]["kernel"].shape == (5, 4, 256, 512)
  assert variables["params"]["netfclip_3"]["kernel"].shape == (512, 1024)
  del state["netcnnlip.19.running_var"]
  with pytest.raises(weights.CheckpointError, match="missing key 'netcnnlip.19.running_var'"):
    weights.torch_state_dict_to_variables("syncnet_v2", state)


def _write_clip(path, frames, wav, fps=25):
  from lipsync_jax.media import video

  h, w = frames[0].shape[:2]
  with video.VideoWriter(path, fps, w, h) as writer:
    for f in frames:
      writer.write(f)
    writer.close(audio=wav)


def _talking_clip(num_frames=20, size=(120, 160), seed=0):
  rng = np.random.default_rng(seed)
  frames = []
  for i in range(num_frames):
    f = np.full(size + (3,), 90, np.uint8)
    f[30:100, 50:110] = 170
    f[75 : 75 + 3 + (i % 4) * 4, 65:95] = 30
    frames.append(f)
  wav = np.sin(np.arange(num_frames * 640) * 0.05) * 0.3 + rng.normal(size=num_frames * 640) * 0.01
  return frames, wav.astype(np.float32)


def test_lse_cli_on_tiny_video(tmp_path):
  _, syncnet_path = _tiny_syncnet_file(tmp_path)
  frames, wav = _talking_clip()
  clip = os.path.join(tmp_path, "clip.mp4")
  _write_clip(clip, frames, wav)
  out_json = os.path.join(tmp_path, "lse.json")
  rc = evaluate.main(
    ["lse", "--videos", str(tmp_path), "--syncnet", syncnet_path, "--json", out_json, "--batch_size", "8"]
  )
  assert rc == 0
  result = json.load(open(out_json))
  assert len(result["videos"]) == 1 and not result["failed"]
  row = result["videos"][0]
  assert row["windows"] == 15
  assert np.isfinite(row["lse_d"]) and row["lse_c"] >= 0 and -15 <= row["offset"] <= 15
  assert result["mean"]["lse_d"] == pytest.approx(row["lse_d"])


def test_cli_error_lines(tmp_path, capsys):
  assert (
    evaluate.main(
      [
        "lse",
        "--videos",
        os.path.join(tmp_path, "nope.mp4"),
        "--syncnet",
        os.path.join(tmp_path, "missing.model"),
      ]
    )
    == 1
  )
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "missing.model" in err[0] and err[0].startswith("error:")
  bad = os.path.join(tmp_path, "bad.model")
  open(bad, "wb").write(b"not a torch file")
  assert evaluate.main(["lse", "--videos", str(tmp_path), "--syncnet", bad]) == 1
  assert "bad.model" in capsys.readouterr().err
  assert evaluate.main(["recon", "--generated", "a.mp4", "--reference", "b.mp4"]) == 1
  assert "a.mp4" in capsys.readouterr().err


def test_mouth_psnr_ssim():
  rng = np.random.default_rng(5)
  ref = [rng.integers(0, 255, (60, 80, 3), dtype=np.uint8) for _ in range(3)]
  box = (10, 10, 70, 50)
  same = recon.mouth_psnr_ssim(ref, ref, [box] * 3)
  assert same["psnr"] == float("inf") and same["ssim"] == pytest.approx(1.0)
  noisy = [np.clip(r.astype(int) + rng.integers(-20, 20, r.shape), 0, 255).astype(np.uint8) for r in ref]
  worse = recon.mouth_psnr_ssim(noisy, ref, [box] * 3)
  assert 15 < worse["psnr"] < 40 and worse["ssim"] < 0.999
  # Damage outside the mouth region (upper half of the box) does not count.
  upper = [r.copy() for r in ref]
  for u in upper:
    u[10:30] = 0
  assert recon.mouth_psnr_ssim(upper, ref, [box] * 3)["psnr"] == float("inf")


def test_recon_cli(tmp_path):
  frames, wav = _talking_clip(num_frames=8)
  a, b = os.path.join(tmp_path, "a.mp4"), os.path.join(tmp_path, "b.mp4")
  _write_clip(a, frames, wav)
  _write_clip(b, [np.clip(f.astype(int) + 25, 0, 255).astype(np.uint8) for f in frames], wav)
  out = os.path.join(tmp_path, "r.json")
  assert (
    evaluate.main(
      ["recon", "--generated", a, "--reference", b, "--box", "30", "100", "50", "110", "--json", out]
    )
    == 0
  )
  result = json.load(open(out))
  assert result["frames"] == 8 and 10 < result["psnr"] < 30


def test_sync_cli_with_tiny_expert_and_plot(tmp_path, capsys):
  import jax

  from lipsync_jax.models import SyncNet, example_inputs

  variables = SyncNet(width_multiplier=0.0625).init(jax.random.key(0), *example_inputs("syncnet", 1, 96))
  expert_dir = weights.save_variables(
    os.path.join(tmp_path, "expert"), jax.tree.map(np.asarray, variables), "syncnet"
  )
  frames, wav = _talking_clip(num_frames=24)
  clip = os.path.join(tmp_path, "clip.mp4")
  _write_clip(clip, frames, wav)
  png, out = os.path.join(tmp_path, "sync.png"), os.path.join(tmp_path, "sync.json")
  rc = evaluate.main(
    [
      "sync",
      "--video",
      clip,
      "--expert",
      expert_dir,
      "--box",
      "30",
      "100",
      "50",
      "110",
      "--plot",
      png,
      "--json",
      out,
    ]
  )
  assert rc == 0, capsys.readouterr().err
  result = json.load(open(out))
  assert result["windows"] == 20 and len(result["sync_prob"]) == 20
  assert all(0.0 <= p <= 1.0 + 1e-6 for p in result["sync_prob"])
  assert -15 <= result["offset"] <= 15 and len(result["sync_per_offset"]) == 31
  assert os.path.getsize(png) > 1000
  assert "AV offset" in capsys.readouterr().out


def test_syncnet_face_crop_geometry():
  frame = np.zeros((400, 400, 3), np.uint8)
  frame[100:240, 80:220] = 255  # exactly the crop region of box (100, 100, 200, 200) at crop_scale 0.4
  crop = lse.syncnet_face_crop(frame, (100, 100, 200, 200))
  assert crop.shape == (224, 224, 3) and crop.min() == 255
  # Near the border the frame is padded with 110 grey.
  edge = lse.syncnet_face_crop(np.zeros((120, 120, 3), np.uint8), (0, 0, 60, 60))
  assert edge[0, 0, 0] == 110 and edge[200, 200, 0] == 0


def test_lse_on_infer_output(tmp_path):
  """The issue's acceptance path: lip-sync a clip, then score the output with a syncnet_v2-format file."""
  import jax

  from lipsync_jax.inference.lipsync import lipsync
  from lipsync_jax.models import Wav2Lip, example_inputs

  variables = Wav2Lip(width_multiplier=1 / 16).init(jax.random.key(0), *example_inputs("wav2lip", 1, 96))
  frames, wav = _talking_clip(num_frames=16)
  face = os.path.join(tmp_path, "face.mp4")
  _write_clip(face, frames, wav)
  out = os.path.join(tmp_path, "synced.mp4")
  lipsync(
    face,
    face,
    variables,
    out,
    {"width_multiplier": 1 / 16},
    box=(30, 100, 50, 110),
    batch_size=8,
    progress=False,
  )
  _, syncnet_path = _tiny_syncnet_file(tmp_path)
  result = lse.evaluate_lse([out], syncnet_path, batch_size=8, progress=False)
  assert not result["failed"] and result["videos"][0]["windows"] > 5


def test_expert_offset_curve_has_no_padding_bias():
  emb = np.tile(np.array([[0.6, 0.8, 0.0]]), (20, 1))
  audio = np.tile(np.array([[0.0, 0.6, 0.8]]), (20, 1))  # cos 0.48 at every offset
  result = sync.sync_from_embeddings(emb, audio)
  np.testing.assert_allclose(result["sync_per_offset"], 0.48, atol=1e-12)
  assert result["confidence"] == pytest.approx(0.0, abs=1e-12)


class _FixedDetector:
  """A FaceDetector stand-in: the same raw box on every frame."""

  def __init__(self, box):
    self.box = box

  def detect_faces(self, frames):
    return [np.array([[*self.box, 1.0]], np.float32) for _ in frames]


def test_lse_face_crop_uses_the_raw_tracked_box_and_the_fps_rule(tmp_path):
  """--face_crop crops around the track's box with NO pads (syncnet_python crops raw detector boxes), and a
  30 fps video is resampled by THE fps rule (nearest frame by timestamp), 36 frames -> 30."""
  from lipsync_jax.evaluation import faces
  from lipsync_jax.media import video

  frames, _ = _talking_clip(num_frames=36)
  wav = (np.sin(np.arange(36 * 16000 // 30) * 0.05) * 0.3).astype(np.float32)
  clip = os.path.join(tmp_path, "clip30.mp4")
  _write_clip(clip, frames, wav, fps=30)
  raw_box = (50, 30, 110, 100)
  got, _ = lse.load_lse_inputs(clip, face_crop=True, detector=_FixedDetector(raw_box), protocol="direct")
  resampled = list(video.iter_frames(clip, fps=25.0))
  assert len(got) == len(resampled) == 30
  crops = np.stack([lse.syncnet_face_crop(f, raw_box) for f in resampled])
  np.testing.assert_array_equal(got, crops)
  # The default (reference) protocol: the same crops through the CLI's JPEG round trip, in order.
  reference, _ = lse.load_lse_inputs(clip, face_crop=True, detector=_FixedDetector(raw_box))
  jpeg = lse.CliJpegRoundTrip()
  np.testing.assert_array_equal(reference, np.stack([jpeg.bgr(c) for c in crops]))
  assert 0 < np.abs(reference.astype(int) - crops).mean() < 8
  padded, _ = faces.tracked_boxes([raw_box] * 3, 160, 120)  # what the default (inference) pads would give
  assert tuple(padded[0]) != raw_box
  whole, _ = lse.load_lse_inputs(clip)
  assert len(whole) == 30


def test_library_functions_on_arrays_match_the_files(tmp_path):
  """lse_from_arrays / ExpertSync.scores (what training can call) give the CLI's numbers."""
  import jax

  from lipsync_jax.media import audio, video
  from lipsync_jax.models import SyncNet, example_inputs

  _, syncnet_path = _tiny_syncnet_file(tmp_path)
  frames, wav = _talking_clip(num_frames=20)
  clip = os.path.join(tmp_path, "clip.mp4")
  _write_clip(clip, frames, wav)
  features = lse.load_features(syncnet_path, batch_size=8)
  from_file = lse.lse_scores(clip, features)
  frames_224, wav_16k = lse.load_lse_inputs(clip)
  assert lse.lse_from_arrays(frames_224, wav_16k, features) == {
    k: v for k, v in from_file.items() if k != "video"
  }
  assert features.lips.trace_count == 1 and features.audio.trace_count == 1
  variables = SyncNet(width_multiplier=0.0625).init(jax.random.key(0), *example_inputs("syncnet", 1, 96))
  expert = sync.ExpertSync(jax.tree.map(np.asarray, variables), {"width_multiplier": 0.0625}, batch_size=8)
  crops = np.stack([np.ascontiguousarray(f[:96, :96]) for f in video.iter_frames(clip)])
  mel = audio.melspectrogram(video.read_audio(clip, sr=16000))
  result = expert.scores(crops, mel, 25.0)
  assert result["windows"] == 16 and expert.runner.trace_count == 1


def test_cli_reads_and_writes_gcs(tmp_path, capsys, gcs_dir):
  """lse / sync / recon with every path on gs:// (the emulator): videos (a directory too), weights, the
  JSON reports and the plot; the scores equal the local files' scores; a missing gs:// video is named."""
  import jax

  from lipsync_jax import fs
  from lipsync_jax.models import SyncNet, example_inputs

  _, syncnet_path = _tiny_syncnet_file(tmp_path)
  fs.copy(syncnet_path, f"{gcs_dir}/syncnet_v2.model")
  frames, wav = _talking_clip(num_frames=24)
  clip = os.path.join(tmp_path, "clip.mp4")
  _write_clip(clip, frames, wav)
  fs.copy(clip, f"{gcs_dir}/videos/clip.mp4")
  lse_args = ["--syncnet", f"{gcs_dir}/syncnet_v2.model", "--batch_size", "8", "--protocol", "direct"]
  local_json = os.path.join(tmp_path, "lse.json")
  remote_json = f"{gcs_dir}/lse.json"
  assert evaluate.main(["lse", "--videos", f"{gcs_dir}/videos", "--json", remote_json, *lse_args]) == 0
  assert evaluate.main(["lse", "--videos", clip, "--json", local_json, *lse_args]) == 0
  with fs.open(remote_json) as f:
    remote = json.load(f)
  local = json.load(open(local_json))
  assert remote["videos"][0]["video"] == f"{gcs_dir}/videos/clip.mp4" and not remote["failed"]
  assert remote["mean"] == local["mean"] and remote["videos"][0]["windows"] == 19

  variables = SyncNet(width_multiplier=0.0625).init(jax.random.key(0), *example_inputs("syncnet", 1, 96))
  expert_dir = weights.save_variables(f"{gcs_dir}/expert", jax.tree.map(np.asarray, variables), "syncnet")
  box = ["--box", "30", "100", "50", "110"]
  png = f"{gcs_dir}/out/sync.png"
  sync_args = ["sync", "--video", f"{gcs_dir}/videos/clip.mp4", "--expert", expert_dir, "--plot", png]
  assert evaluate.main(sync_args + box + ["--json", f"{gcs_dir}/out/sync.json"]) == 0, capsys.readouterr().err
  with fs.open(f"{gcs_dir}/out/sync.json") as f:
    assert json.load(f)["windows"] == 20
  assert fs.size(png) > 1000

  recon = ["recon", "--generated", f"{gcs_dir}/videos/clip.mp4", "--reference", clip] + box
  assert evaluate.main(recon + ["--json", f"{gcs_dir}/out/recon.json"]) == 0
  with fs.open(f"{gcs_dir}/out/recon.json") as f:
    assert json.load(f)["frames"] == 24
  capsys.readouterr()
  assert evaluate.main(["recon", "--generated", f"{gcs_dir}/absent.mp4", "--reference", clip] + box) == 1
  assert f"{gcs_dir}/absent.mp4" in capsys.readouterr().err
