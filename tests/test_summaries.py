"""lipsync_jax.training.summaries.SummaryWriter: TensorBoard's own reader (EventAccumulator) reads back what it
wrote, across file rotations and an earlier run's files; a gs:// logdir (the emulator) gets the same files."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from lipsync_jax import fs
from lipsync_jax.training import summaries

pytest.importorskip("tensorboard")


def _accumulator(logdir):
  from tensorboard.backend.event_processing import event_accumulator as ea

  acc = ea.EventAccumulator(
    os.fspath(logdir),
    size_guidance={ea.SCALARS: 0, ea.IMAGES: 0, ea.TENSORS: 0, ea.HISTOGRAMS: 0, ea.AUDIO: 0},
  )
  acc.Reload()
  return acc


def _image(seed, h=12, w=20):
  return np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)


def _decoded_rgb(image_event):
  bgr = cv2.imdecode(np.frombuffer(image_event.encoded_image_string, np.uint8), cv2.IMREAD_COLOR)
  return bgr[..., ::-1]


def _write_run(writer, steps):
  for step in steps:
    writer.write_scalars(step, {"train/loss": 1.0 / step, "train/lr": 1e-4})
    if step % 10 == 0:
      writer.write_images(step, {"samples": _image(step)[None], "pair": np.stack([_image(1), _image(2)])})


def _event_files(logdir):
  return [n for n in fs.listdir(logdir) if n.startswith(summaries.FILE_PREFIX)]


def test_tensorboard_reads_scalars_and_images_across_rotations(tmp_path):
  logdir = tmp_path / "tb"
  writer = summaries.SummaryWriter(logdir, max_file_bytes=2048)
  _write_run(writer, range(1, 41))
  writer.write_texts(40, {"note": "hello"})
  writer.write_histograms(40, {"weights": np.arange(100.0)}, num_buckets={"weights": 5})
  writer.write_hparams({"lr": 1e-4, "stage": "gan", "batch": np.int64(16), "dims": (1, 2)})
  writer.close()
  names = _event_files(logdir)
  assert len(names) >= 3, names  # rotated
  assert names == sorted(names)
  assert all(os.path.getsize(logdir / n) <= 2048 + 4096 for n in names)  # bounded (+ one event)

  acc = _accumulator(logdir)
  loss = acc.Scalars("train/loss")
  assert [e.step for e in loss] == list(range(1, 41))
  np.testing.assert_allclose([e.value for e in loss], [1.0 / s for s in range(1, 41)], rtol=1e-6)
  assert set(acc.Tags()["images"]) == {"samples", "pair/image/0", "pair/image/1"}
  samples = acc.Images("samples")
  assert [e.step for e in samples] == [10, 20, 30, 40]
  assert (samples[0].height, samples[0].width) == (12, 20)
  expected = (np.clip(_image(30), 0, 1) * 255 + 0.5).astype(np.uint8)
  np.testing.assert_array_equal(_decoded_rgb(samples[2]), expected)  # lossless PNG, channels in RGB order
  np.testing.assert_array_equal(
    _decoded_rgb(acc.Images("pair/image/1")[0]), (_image(2) * 255 + 0.5).astype(np.uint8)
  )
  histogram = acc.Histograms("weights")[0].histogram_value
  assert (histogram.num, histogram.min, histogram.max, sum(histogram.bucket)) == (100, 0, 99, 100)
  assert "note" in acc.Tags()["tensors"]


def test_a_second_run_sorts_after_the_first(tmp_path):
  """A resumed run (same workdir, maybe the same second, another pid) writes files that sort later, so
  TensorBoard (which reads a directory's files in name order) sees both runs' steps in order."""
  logdir = tmp_path / "tb"
  # An earlier run on a host whose clock was ahead: its file is stamped in the future.
  future = summaries.event_file_name(4_000_000_000, "otherhost", 99999, 1)
  with summaries.SummaryWriter(logdir) as _:
    pass
  first = _event_files(logdir)
  os.rename(logdir / first[0], logdir / future)
  writer = summaries.SummaryWriter(logdir)
  _write_run(writer, range(1, 6))
  writer.close()
  names = _event_files(logdir)
  assert names == sorted(names) and names[0] == future and len(names) == 2
  assert [e.step for e in _accumulator(logdir).Scalars("train/loss")] == [1, 2, 3, 4, 5]


def test_flush_makes_writes_visible_and_close_is_final(tmp_path):
  logdir = tmp_path / "tb"
  writer = summaries.SummaryWriter(logdir, flush_secs=3600)
  writer.write_scalars(1, {"a": 1.0})
  writer.flush()
  assert [e.step for e in _accumulator(logdir).Scalars("a")] == [1]
  writer.close()
  writer.close()  # idempotent
  with pytest.raises(ValueError, match="closed"):
    writer.write_scalars(2, {"a": 2.0})


def test_gcs_logdir(gcs_dir, tmp_path):
  """gs://: the object is rewritten on flush (no appends on an object store) and rotation still works."""
  logdir = f"{gcs_dir}/workdir"
  writer = summaries.SummaryWriter(logdir, max_file_bytes=2048, flush_secs=3600)
  writer.write_scalars(1, {"train/loss": 1.0})
  writer.flush()
  with fs.open(writer.path, "rb") as f:
    first_bytes = f.read()
  writer.write_scalars(2, {"train/loss": 0.5})
  writer.flush()
  with fs.open(writer.path, "rb") as f:
    assert f.read().startswith(first_bytes) and fs.size(writer.path) > len(first_bytes)
  _write_run(writer, range(3, 31))
  writer.close()
  names = _event_files(logdir)
  assert len(names) >= 2 and names == sorted(names)
  local = tmp_path / "copy"
  local.mkdir()
  for name in names:
    fs.copy(f"{logdir}/{name}", local / name)
  acc = _accumulator(local)
  assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, 31))
  assert [e.step for e in acc.Images("samples")] == [10, 20, 30]
