"""`evaluate lse` (default protocol 'reference') against the reference scoring procedure run for real.

The reference (Wav2Lip evaluation/scores_LSE + syncnet_python SyncNetInstance_calc_scores, spec section 10)
is run here as its commands say: the ffmpeg CLI (the binary of the imageio-ffmpeg wheel) writes default-
quality JPEG frames and a 16 kHz s16 wav, cv2.imread + cv2.resize, scipy.io.wavfile.read +
python_speech_features.mfcc, the PyTorch SyncNet v2 (tests/syncnet_v2_reference.py, random weights) and
calc_pdist's offset search in torch. Ours must give the same LSE-D (0.5 %), LSE-C (0.005) and offset, the
same frames and JPEG bytes; `--protocol direct` (no JPEG round trip) must differ measurably.
"""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
import subprocess

import cv2
import numpy as np
import pytest

from lipsync_jax import evaluate
from lipsync_jax.evaluation import lse

SECONDS = 2.4  # 60 frames at 25 fps
WIDTH, HEIGHT = 640, 360
# The real network (random weights): at width 0.25 dropping the JPEG round trip moved LSE-D by 0.6 % only.
SYNCNET_WIDTH = 1.0


def _ffmpeg() -> str:
  imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg", reason="the reference needs the ffmpeg CLI")
  return imageio_ffmpeg.get_ffmpeg_exe()


def _speech(tmp_path) -> tuple[np.ndarray, int]:
  from scipy.io import wavfile

  if shutil.which("espeak-ng") is None:
    pytest.skip("espeak-ng is not installed (the test clip's speech)")
  path = os.path.join(tmp_path, "speech.wav")
  subprocess.run(["espeak-ng", "-w", path, "Lip sync is all you need, said the fox."], check=True)
  sr, wav = wavfile.read(path)
  n = int(SECONDS * sr)
  wav = np.pad(wav.astype(np.float32)[:n] / 32768, (0, max(0, n - len(wav))))
  return wav, sr


def _talking_head_clip(tmp_path) -> str:
  """640x360 25 fps H.264 + AAC (22.05 kHz: the CLI resamples): a moving textured background and a cartoon
  face whose mouth opens with the speech envelope, a frame counter."""
  from lipsync_jax.media import video

  wav, sr = _speech(tmp_path)
  num_frames = int(SECONDS * 25)
  hop = sr / 25
  env = np.array([np.abs(wav[int(i * hop) : int((i + 1) * hop)]).mean() for i in range(num_frames)])
  env /= max(env.max(), 1e-6)
  rng = np.random.default_rng(0)
  texture = cv2.normalize(
    cv2.GaussianBlur(rng.integers(0, 256, (400, 800, 3), np.uint8), (0, 0), 3), None, 0, 255, cv2.NORM_MINMAX
  )
  path = os.path.join(tmp_path, "talking.mp4")
  with video.VideoWriter(path, 25, WIDTH, HEIGHT) as writer:
    for i in range(num_frames):
      f = np.ascontiguousarray(texture[i % 40 : i % 40 + HEIGHT, 2 * i : 2 * i + WIDTH])
      cx, cy = 320 + int(20 * np.sin(i / 7)), 180 + int(8 * np.cos(i / 5))
      cv2.ellipse(f, (cx, cy), (90, 120), 0, 0, 360, (120, 160, 210), -1)
      cv2.circle(f, (cx - 35, cy - 35), 12, (40, 40, 40), -1)
      cv2.circle(f, (cx + 35, cy - 35), 12, (40, 40, 40), -1)
      cv2.ellipse(f, (cx, cy + 50), (40, 4 + int(30 * env[i])), 0, 0, 360, (40, 20, 120), -1)
      cv2.putText(f, f"{i:03d}", (20, 340), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
      writer.write(f)
    writer.close(audio=wav, sample_rate=sr)
  return path


def _reference_extract(ffmpeg: str, video_path: str, tmp_dir: str) -> None:
  """SyncNetInstance_calc_scores.evaluate's two ffmpeg commands, verbatim."""
  os.makedirs(tmp_dir)
  for command in (
    f"{ffmpeg} -loglevel error -y -i {video_path} -threads 1 -f image2 {os.path.join(tmp_dir, '%06d.jpg')}",
    f"{ffmpeg} -loglevel error -y -i {video_path} -async 1 -ac 1 -vn -acodec pcm_s16le -ar 16000 "
    f"{os.path.join(tmp_dir, 'audio.wav')}",
  ):
    subprocess.run(command.split(), check=True)


def _reference_scores(model, tmp_dir: str, vshift: int = 15, batch_size: int = 20) -> dict:
  """SyncNetInstance_calc_scores.evaluate + calc_pdist (syncnet_python), transcribed: torch, float32."""
  import python_speech_features
  import torch
  from scipy.io import wavfile

  images = [cv2.resize(cv2.imread(f), (224, 224)) for f in sorted(glob.glob(os.path.join(tmp_dir, "*.jpg")))]
  im = np.expand_dims(np.stack(images, axis=3), axis=0)  # (1, 224, 224, 3, T)
  im = np.transpose(im, (0, 3, 4, 1, 2))  # (1, 3, T, 224, 224)
  imtv = torch.from_numpy(im.astype(float)).float()
  sample_rate, audio = wavfile.read(os.path.join(tmp_dir, "audio.wav"))
  mfcc = np.stack([np.array(i) for i in zip(*python_speech_features.mfcc(audio, sample_rate))])
  cct = torch.from_numpy(mfcc[None, None].astype(float)).float()
  min_length = min(len(images), math.floor(len(audio) / 640))
  lastframe = min_length - 5
  im_feat, cc_feat = [], []
  with torch.no_grad():
    for i in range(0, lastframe, batch_size):
      rows = range(i, min(lastframe, i + batch_size))
      im_feat.append(model.forward_lip(torch.cat([imtv[:, :, v : v + 5] for v in rows], 0)))
      cc_feat.append(model.forward_aud(torch.cat([cct[:, :, :, v * 4 : v * 4 + 20] for v in rows], 0)))
  im_feat, cc_feat = torch.cat(im_feat, 0), torch.cat(cc_feat, 0)
  win_size = vshift * 2 + 1
  feat2p = torch.nn.functional.pad(cc_feat, (0, 0, vshift, vshift))
  dists = [
    torch.nn.functional.pairwise_distance(im_feat[[i], :].repeat(win_size, 1), feat2p[i : i + win_size, :])
    for i in range(len(im_feat))
  ]
  mdist = torch.mean(torch.stack(dists, 1), 1)
  minval, minidx = torch.min(mdist, 0)
  return {
    "lse_d": float(minval),
    "lse_c": float(torch.median(mdist) - minval),
    "offset": int(vshift - minidx),
    "windows": lastframe,
    "images": np.stack(images),
    "audio": audio,
  }


def _drop_comment(jpeg: bytes) -> bytes:
  """The JPEG without its COM segment (FFmpeg writes its libavcodec version there: 'Lavc62.28.102')."""
  assert jpeg[2:4] == b"\xff\xfe", "expected the encoder comment right after SOI"
  return jpeg[:2] + jpeg[4 + int.from_bytes(jpeg[4:6], "big") :]


def test_default_lse_equals_the_reference_procedure(tmp_path):
  from test_evaluate import _tiny_syncnet_file

  ffmpeg = _ffmpeg()
  clip = _talking_head_clip(str(tmp_path))
  ref_dir = os.path.join(tmp_path, "reference")
  _reference_extract(ffmpeg, clip, ref_dir)
  model, syncnet_path = _tiny_syncnet_file(str(tmp_path), width=SYNCNET_WIDTH)
  want = _reference_scores(model, ref_dir)

  # The frames: our in-process JPEGs are the CLI's bytes (but for the version comment), so the images
  # SyncNet sees are identical.
  jpeg = lse.CliJpegRoundTrip()
  ours = [jpeg.jpeg(frame) for frame in lse.decoded_frames(clip)]
  cli = [open(p, "rb").read() for p in sorted(glob.glob(os.path.join(ref_dir, "*.jpg")))]
  assert len(ours) == len(cli) == 60
  assert [_drop_comment(b) for b in ours] == [_drop_comment(b) for b in cli]
  frames, wav = lse.load_lse_inputs(clip)
  np.testing.assert_array_equal(frames, want["images"])
  # The audio: equal int16 samples wherever a window reads (the last window ends 240 samples before 640 n;
  # the resampler's last few samples differ: the CLI trims the AAC padding before resampling).
  used = 640 * (want["windows"] + 5) - 240
  wav16 = np.clip(np.round(wav.astype(np.float64) * 32768), -32768, 32767).astype(np.int16)
  np.testing.assert_array_equal(wav16[:used], want["audio"][:used])

  out_json = os.path.join(tmp_path, "lse.json")
  assert evaluate.main(["lse", "--videos", clip, "--syncnet", syncnet_path, "--json", out_json]) == 0
  got = json.load(open(out_json))
  assert got["protocol"] == "reference" and not got["failed"]
  row = got["videos"][0]
  assert row["windows"] == want["windows"] == 55
  assert row["lse_d"] == pytest.approx(want["lse_d"], rel=0.005)
  assert row["lse_c"] == pytest.approx(want["lse_c"], abs=0.005)
  assert row["offset"] == want["offset"]

  direct_json = os.path.join(tmp_path, "direct.json")
  argv = ["lse", "--videos", clip, "--syncnet", syncnet_path, "--json", direct_json, "--protocol", "direct"]
  assert evaluate.main(argv) == 0
  direct = json.load(open(direct_json))["videos"][0]
  print(
    f"reference LSE-D {want['lse_d']:.6f} LSE-C {want['lse_c']:.6f} offset {want['offset']} | ours "
    f"{row['lse_d']:.6f} {row['lse_c']:.6f} {row['offset']} | direct {direct['lse_d']:.6f} "
    f"{direct['lse_c']:.6f} {direct['offset']}"
  )
  # Dropping the round trip must show: LSE-D off by twice the tolerance at least (measured: 2.0 %).
  assert abs(direct["lse_d"] - want["lse_d"]) > 0.01 * want["lse_d"]


def test_unknown_protocol_is_an_error_naming_the_choices(tmp_path):
  with pytest.raises(ValueError, match="unknown LSE protocol 'jpeg'.*'reference'.*'direct'"):
    lse.load_lse_inputs(os.path.join(tmp_path, "x.mp4"), protocol="jpeg")
