"""Tests for lipsync_jax.media.s3fd: the Flax S3FD against a PyTorch reference written from the spec
(tests/s3fd_reference.py), its decode + NMS against the original per-cell decode, the detector interface,
and the weights errors. Random weights (the public s3fd.pth cannot be fetched here) saved as a bare
state_dict, as s3fd.pth is."""

from __future__ import annotations

import sys

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import s3fd_reference as ref  # noqa: E402  (tests/ is on sys.path under pytest's rootdir conftest)

from lipsync_jax.media import s3fd  # noqa: E402
from lipsync_jax.weights import CheckpointError  # noqa: E402

SIZES = [(256, 320), (250, 333)]  # (H, W); the odd one exercises floor pooling and odd head maps


def _random_net(seed: int = 0) -> ref.S3FDNet:
  """He-initialised weights (first conv / 64 so the O(100) mean-subtracted pixels give O(1) features) and
  small random biases: conf logits spread over a few units, so about half the cells score > 0.5 without
  saturating at 1.0 (no exact ties) and NMS has hundreds of overlapping boxes to work through."""
  torch.manual_seed(seed)
  net = ref.S3FDNet().eval()
  with torch.no_grad():
    for name, p in net.named_parameters():
      if p.ndim == 4:
        p.normal_(0, (2.0 / np.prod(p.shape[1:])) ** 0.5 / (64 if name.startswith("conv1_1") else 1))
      elif not name.endswith("_norm.weight"):
        p.normal_(0, 0.01)
  return net


def _in_frame(box, size):
  """Wav2Lip's box clipped to the (H, W) frame, as the face track does next (after its pads)."""
  x1, y1, x2, y2 = box
  return (x1, y1, min(x2, size[1]), min(y2, size[0]))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  net = _random_net()
  path = tmp_path_factory.mktemp("s3fd") / "s3fd.pth"
  torch.save(net.state_dict(), path)
  rng = np.random.default_rng(0)
  frames = {size: rng.integers(0, 256, (1, *size, 3), dtype=np.uint8) for size in SIZES}
  with torch.no_grad():
    torch_out = {size: net(ref.preprocess(frames[size])) for size in SIZES}
  return {"net": net, "path": path, "variables": s3fd.load_s3fd(path), "frames": frames, "torch": torch_out}


def test_raw_outputs_match_pytorch(setup):
  forward = jax.jit(lambda v, x: s3fd.S3FD().apply(v, s3fd.preprocess(x)))
  for size in SIZES:
    ours = forward(setup["variables"], setup["frames"][size])
    theirs = [t.numpy().transpose(0, 2, 3, 1) for t in setup["torch"][size]]
    assert len(ours) == len(theirs) == 12
    shapes = s3fd.head_shapes(*size)
    for i, (a, b) in enumerate(zip(ours, theirs)):
      assert a.shape == b.shape == (1, *shapes[i // 2], 2 if i % 2 == 0 else 4), (size, i)
      scale = max(1.0, float(np.abs(b).max()))
      err = float(np.abs(np.asarray(a) - b).max())
      assert err <= 1e-4 * scale, (size, i, err, scale)  # 1e-4 of each head's range


def test_decode_and_nms_match_the_original(setup):
  size = SIZES[0]
  outputs = setup["torch"][size]
  expected = ref.decode_and_nms(outputs)
  prob, loc = (np.asarray(a)[0] for a in s3fd.cells([t.numpy().transpose(0, 2, 3, 1) for t in outputs]))
  candidates = prob > 0.5
  assert len(expected) >= 100 and candidates.sum() > 2 * len(expected)  # NMS suppressed most candidates
  assert prob.max() < 1.0  # no saturated scores: the order of exact ties is unspecified in the original
  rows = s3fd.decode(prob, loc, s3fd.prior_boxes(*size))
  assert rows.shape == expected.shape
  np.testing.assert_allclose(rows[:, 4], expected[:, 4], rtol=0, atol=1e-6)
  np.testing.assert_allclose(rows[:, :4], expected[:, :4], rtol=0, atol=1e-4)  # 1 ulp (exp) at most
  np.testing.assert_array_equal(rows[:, :4].astype(int), expected[:, :4].astype(int))
  faces = s3fd.wav2lip_faces(rows, size[1], size[0])
  assert tuple(int(v) for v in faces[0, :4]) == _in_frame(ref.wav2lip_box(expected), size)


def test_detector_batches_and_compiles_once_per_size(setup):
  det = s3fd.S3FDDetector(setup["path"], batch_size=4)
  rng = np.random.default_rng(1)
  frames = rng.integers(0, 256, (5, 96, 128, 3), dtype=np.uint8)
  faces = det.detect_faces(list(frames))
  assert len(faces) == 5 and det.trace_count == 1
  expected = ref.wav2lip_detect(setup["net"], frames)
  for got, (rows, box) in zip(faces, expected):
    assert box is not None and tuple(int(v) for v in got[0, :4]) == _in_frame(box, (96, 128))
    want = s3fd.wav2lip_faces(rows, 128, 96)  # every face, boxes wholly outside the frame dropped
    assert 10 < len(want) < len(rows) and got.shape == want.shape
    np.testing.assert_array_equal(got[:, :4], want[:, :4])
    np.testing.assert_allclose(got[:, 4], want[:, 4], rtol=0, atol=1e-5)
  assert det.detect(list(frames[:2])) == [_in_frame(box, (96, 128)) for _, box in expected[:2]]
  assert det.trace_count == 1  # same size, same batch: no new compile
  other = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
  mixed = det.detect_faces([frames[0], other, frames[1]])
  assert det.trace_count == 2  # one more frame size, one more compile
  np.testing.assert_array_equal(mixed[0], faces[0])
  np.testing.assert_array_equal(mixed[2], faces[1])
  with pytest.raises(ValueError, match="uint8 BGR"):
    det.detect_faces([frames[0].astype(np.float32)])
  with pytest.raises(ValueError, match="at least 32x32"):
    det.detect_faces([frames[0, :16]])


def test_out_of_memory_halves_the_batch(setup, monkeypatch):
  det = s3fd.S3FDDetector(setup["variables"], batch_size=4)
  real = det._runner_class

  class Runner(real):  # fails like XLA does for batches above 2
    def run(self, *arrays):
      if self.batch_size > 2:
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")
      return super().run(*arrays)

  monkeypatch.setattr(det, "_runner_class", Runner)
  frames = np.random.default_rng(2).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
  faces = det.detect_faces(list(frames))
  assert det.batch_size == 2 and len(faces) == 3
  expected = [_in_frame(box, (64, 64)) for _, box in ref.wav2lip_detect(setup["net"], frames)]
  assert [tuple(int(v) for v in f[0, :4]) for f in faces] == expected


def test_weights_errors(setup, tmp_path, monkeypatch):
  with pytest.raises(ValueError, match="weights=PATH of s3fd.pth"):
    s3fd.S3FDDetector()
  with pytest.raises(CheckpointError, match="no such checkpoint file"):
    s3fd.load_s3fd(tmp_path / "absent.pth")
  state = dict(setup["net"].state_dict())
  del state["conv4_3_norm.weight"]
  state["fc8.weight"] = torch.zeros(3)
  torch.save(state, tmp_path / "bad.pth")
  with pytest.raises(
    CheckpointError, match=r"missing keys 'conv4_3_norm.weight'.*unexpected keys 'fc8.weight'"
  ):
    s3fd.load_s3fd(tmp_path / "bad.pth")
  state = dict(setup["net"].state_dict())
  state["fc7.weight"] = torch.zeros(1024, 1024)
  with pytest.raises(CheckpointError, match=r"'fc7.weight' has shape \(1024, 1024\), expected"):
    s3fd.state_dict_to_variables(state)
  monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
  with pytest.raises(ImportError, match=r"pip install -e \.\[torch\]"):
    s3fd.load_s3fd(setup["path"])
