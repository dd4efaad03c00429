"""Tests for lipsync_jax.data.synthetic: determinism, audio-driven mouth only, corpus layout and splits."""

from __future__ import annotations

import os

import numpy as np
import pytest

from lipsync_jax.data import synthetic
from lipsync_jax.media import audio, video


def test_same_seed_same_audio_and_mouth_different_seed_differs():
  wav_a, mouth_a = synthetic.synthesize_audio_and_mouth(seed=3, seconds=2.0)
  wav_b, mouth_b = synthetic.synthesize_audio_and_mouth(seed=3, seconds=2.0)
  wav_c, mouth_c = synthetic.synthesize_audio_and_mouth(seed=4, seconds=2.0)
  np.testing.assert_array_equal(wav_a, wav_b)
  np.testing.assert_array_equal(mouth_a, mouth_b)
  assert not np.allclose(mouth_a, mouth_c)
  assert wav_a.dtype == np.float32 and wav_a.size == 32000 and mouth_a.shape == (50, 4)
  assert np.all(np.isfinite(audio.melspectrogram(wav_a))) and np.max(np.abs(wav_a)) <= 1.0


def test_mouth_follows_the_audio_around_each_frame():
  wav, mouth = synthetic.synthesize_audio_and_mouth(seed=0, seconds=8.0)
  # Loudness of each frame's (lead-shifted) 40 ms window, measured directly from the waveform.
  half = int(0.02 * synthetic.SAMPLE_RATE)
  centres = ((np.arange(mouth.shape[0]) + 0.5) / 25 + synthetic.MOUTH_LEAD_SECONDS) * synthetic.SAMPLE_RATE
  rms_db = np.array(
    [10 * np.log10(np.mean(wav[int(c) - half : int(c) + half] ** 2) + 1e-10) for c in centres]
  )
  openness = mouth[:, 0]
  assert np.corrcoef(openness, rms_db)[0, 1] > 0.5
  assert openness[rms_db < -45].max(initial=0) < 0.05  # (near-)silence -> closed mouth
  # Several features drive the shape: every parameter actually varies.
  assert np.all(mouth.std(axis=0) > 0.1)
  # The mouth leads the sound: loudness just after the frame explains the opening better than before it.
  early = [max(0, int(c) - 1600) for c in centres]  # 100 ms earlier
  lagged = np.array(
    [10 * np.log10(np.mean(wav[max(0, e - half) : max(2 * half, e + half)] ** 2) + 1e-10) for e in early]
  )
  assert np.corrcoef(openness, rms_db)[0, 1] > np.corrcoef(openness, lagged)[0, 1] + 0.2


def test_only_the_mouth_region_correlates_with_the_audio():
  spec = synthetic.ClipSpec("s000/00000", speaker_index=0, clip_index=0, seconds=6.0, seed=1)
  frames, wav, mouth, boxes, renderer = synthetic.render_clip(spec)
  frames = np.stack(list(frames())).astype(np.float32).mean(axis=-1)  # (N, H, W) luminance-ish
  x1, y1, x2, y2 = (int(round(v)) for v in renderer.mouth_box())
  margin = 3  # head jitter stays within ~2 px
  outside = np.ones(frames.shape[1:], bool)
  outside[y1 - margin : y2 + margin, x1 - margin : x2 + margin] = False
  opening = mouth[:, 0]
  inside_signal = frames[:, y1:y2, x1:x2].mean(axis=(1, 2))
  outside_signal = frames[:, outside].mean(axis=1)
  assert abs(np.corrcoef(opening, inside_signal)[0, 1]) > 0.5
  assert abs(np.corrcoef(opening, outside_signal)[0, 1]) < 0.3
  # Per-pixel check outside the mouth box: no pixel tracks the opening.
  centred = frames[:, outside] - frames[:, outside].mean(axis=0)
  pixel_corr = (centred * (opening - opening.mean())[:, None]).mean(0) / (
    centred.std(0) * opening.std() + 1e-6
  )
  assert np.quantile(np.abs(pixel_corr), 0.99) < 0.45
  # Boxes: true face box per frame, the head moves a little, independently of the audio.
  assert boxes.shape == (mouth.shape[0], 4)
  motion = boxes[:, 0] - boxes[:, 0].mean()
  assert 0 < np.abs(motion).max() < 4
  assert abs(np.corrcoef(opening, motion)[0, 1]) < 0.3


def test_plan_splits_are_disjoint_by_speaker_and_deterministic():
  specs, speaker_split = synthetic.plan_corpus(40, seed=5)
  specs_again, _ = synthetic.plan_corpus(40, seed=5)
  assert specs == specs_again
  assert len({s.clip_id for s in specs}) == 40
  by_split = {}
  for spec in specs:
    by_split.setdefault(speaker_split[spec.speaker_index], set()).add(spec.clip_id.split("/")[0])
  assert set(by_split) == {"train", "val", "test"}
  assert not (by_split["train"] & by_split["val"]) and not (by_split["train"] & by_split["test"])
  assert not (by_split["val"] & by_split["test"])
  assert all(0.8 <= s.seconds <= 5.0 for s in specs)


def test_tiny_corpus_builds_with_lrs2_layout(tmp_path):
  summary = synthetic.make_corpus(tmp_path / "a", num_clips=3, seed=2, seconds=1.2, workers=1, progress=False)
  root = tmp_path / "a"
  assert summary["num_clips"] == 3 and summary["splits"] == {"train": 1, "val": 1, "test": 1}
  listed = []
  for split in ("train", "val", "test"):
    listed += (root / f"{split}.txt").read_text().split()
  assert len(listed) == len(set(listed)) == 3
  for clip_id in listed:
    base = os.path.join(root, clip_id)
    info = video.probe(base + ".mp4")
    assert (info.num_frames, info.width, info.height, info.has_audio) == (30, 160, 160, True)
    assert info.fps == pytest.approx(25.0)
    mouth = np.load(base + ".mouth.npy")
    boxes = np.load(base + ".boxes.npy")
    assert mouth.shape == (30, 4) and mouth.dtype == np.float32 and boxes.shape == (30, 4)
    wav = video.read_audio(base + ".mp4")
    assert wav.size == pytest.approx(1.2 * 16000, abs=10)
    assert audio.melspectrogram(wav).shape[1] >= 96 + 1  # 80 steps/s covers all 30 frames
  assert not [name for name in os.listdir(root / "s000") if "tmp" in name]
  # Same arguments -> reused; same seed elsewhere -> identical ground truth and near-identical frames.
  assert synthetic.make_corpus(root, num_clips=3, seed=2, seconds=1.2, workers=1, progress=False)["reused"]
  synthetic.make_corpus(tmp_path / "b", num_clips=3, seed=2, seconds=1.2, workers=1, progress=False)
  for clip_id in listed:
    np.testing.assert_array_equal(
      np.load(root / (clip_id + ".mouth.npy")), np.load(tmp_path / "b" / (clip_id + ".mouth.npy"))
    )
    frames_a, _ = video.read_frames(root / (clip_id + ".mp4"))
    frames_b, _ = video.read_frames(tmp_path / "b" / (clip_id + ".mp4"))
    np.testing.assert_array_equal(frames_a, frames_b)


def test_oracle_cap_counts_lookalike_negatives():
  rng = np.random.default_rng(0)
  varied = [rng.random((60, 4)).astype(np.float32) for _ in range(4)]
  assert synthetic.oracle_sync_accuracy(varied, num_pairs=2000) == 1.0  # every negative is distinguishable
  frozen = [np.zeros((60, 4), np.float32)]
  assert synthetic.oracle_sync_accuracy(frozen, num_pairs=2000) == pytest.approx(0.5, abs=0.05)
