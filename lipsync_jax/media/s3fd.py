"""S3FD, the face detector of the original Wav2Lip, in Flax (NHWC), loading the public `s3fd.pth`.

Owns:
  * `S3FD`: the network (face-alignment's / Wav2Lip's `s3fd`, layer for layer): a VGG16 trunk (conv1_1 ..
    conv5_3, 2x2 max-pools with floor), fc6 (3x3, padding 3, NO dilation: the map grows 4 px a side), fc7,
    conv6_1/6_2, conv7_1/7_2; L2Norm (learned per-channel scale) on conv3_3 / conv4_3 / conv5_3; six
    3x3 heads. Returns the 12 raw head outputs in the original order cls1, reg1, ..., cls6, reg6 (NHWC;
    cls1 "max-out background": (max(c0, c1, c2), c3)).
  * `load_s3fd(path)`: the bare PyTorch state_dict `s3fd.pth` -> Flax variables (kernels OIHW -> HWIO),
    read through `lipsync_jax.weights.read_torch_state_dict` (torch.load weights_only=True only).
  * the decode: `head_shapes`, `prior_boxes`, `cells` (softmax + flatten, runs in jit), `decode_boxes` and
    `nms` (NumPy, vectorised over cells; greedy NMS loops over KEPT boxes only, as the original's `nms`).
  * `S3FDDetector`: the `FaceDetector` (lipsync_jax.media.detectors) built on them, batched and jitted.

Input convention (as Wav2Lip feeds it): the whole frame at full resolution (no resize), float32, channels
REVERSED from the decoded BGR to RGB, minus (104, 117, 123) per channel, no /255. (Upstream face-alignment
flips the channels twice so its network sees BGR; Wav2Lip's `get_detections_for_batch` flips once, and we
match Wav2Lip.) `preprocess` does this inside the jitted function, so frames travel to the device as uint8.

Decode, per frame (the original `detect` + `nms`, vectorised): softmax over each head's conf channels, face
probability = channel 1; head i has stride 2**(i+2) and at map cell (h, w) a square prior centred at
(stride/2 + w*stride, stride/2 + h*stride) of side 4*stride; cells with probability > 0.05 are decoded
(centre + loc[:2] * 0.1 * size, size * exp(loc[2:] * 0.2), to corners, float32 in the original's operation
order), greedy NMS at IoU 0.3 with areas (x2-x1+1)*(y2-y1+1) in descending score order, then score > 0.5.
Greedy NMS visits boxes in descending score order and a box is only ever suppressed by an earlier (higher
scoring) one, so boxes scoring <= 0.5 can neither survive nor suppress a box scoring > 0.5: candidates are
therefore taken at max(0.05, 0.5) before NMS, with output identical to the original's (tested against it)
and far fewer NMS rounds. Exactly tied scores (saturated 1.0) are visited last cell first, as the
original's `argsort()[::-1]` does when numpy's (unstable) argsort keeps ties in order; the original's order
for ties otherwise depends on numpy's sort algorithm (version, CPU), i.e. it is unspecified.

Why the decode runs in NumPy after the jitted network rather than inside jit: measured with
bench/s3fd_bench.py (random weights, ~7,500 cells > 0.05 per 720p frame, 2 loaded CPU cores) the decode
takes ~0.3 ms per 360p frame and ~1-2.5 ms per 720p / 1080p frame, against 575 / 1,296 GFLOP of network
per 720p / 1080p frame (XLA's count; ~12 s per 720p frame on those cores); the jitted function already reduces each cell to 5
float32 numbers (probability + loc), and an in-jit top-k would need a fixed K that either silently drops
candidates or needs a fallback path. The NumPy decode also keeps the original's float32 operation order
(exp within 1 ulp of torch's), which a fused XLA program does not promise.

Shapes: one compiled program per (batch, height, width). Frames are never padded or resized (zero padding
changes the network's outputs near the border: bias + ReLU of the padded zeros), so a video, whose frames
all have one size, compiles once; the batch is fixed (`lipsync_jax.inference.runner.BatchRunner` pads the
last one), halved on out-of-memory down to 1, as the original did.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lipsync_jax.media import face_detector
from lipsync_jax.weights import CheckpointError, read_torch_state_dict

# Subtracted from the channel-reversed (RGB) frame, as Wav2Lip does.
MEAN = (104.0, 117.0, 123.0)
# (name, output channels, kernel, stride, padding); 'pool' = 2x2 max-pool, stride 2, floor. A ReLU follows
# every conv. FEATURES: the trunk outputs the heads read (before the pool that follows them).
TRUNK: Sequence[tuple[str, int, int, int, int] | str] = (
  ("conv1_1", 64, 3, 1, 1),
  ("conv1_2", 64, 3, 1, 1),
  "pool",
  ("conv2_1", 128, 3, 1, 1),
  ("conv2_2", 128, 3, 1, 1),
  "pool",
  ("conv3_1", 256, 3, 1, 1),
  ("conv3_2", 256, 3, 1, 1),
  ("conv3_3", 256, 3, 1, 1),
  "pool",
  ("conv4_1", 512, 3, 1, 1),
  ("conv4_2", 512, 3, 1, 1),
  ("conv4_3", 512, 3, 1, 1),
  "pool",
  ("conv5_1", 512, 3, 1, 1),
  ("conv5_2", 512, 3, 1, 1),
  ("conv5_3", 512, 3, 1, 1),
  "pool",
  ("fc6", 1024, 3, 1, 3),
  ("fc7", 1024, 1, 1, 0),
  ("conv6_1", 256, 1, 1, 0),
  ("conv6_2", 512, 3, 2, 1),
  ("conv7_1", 128, 1, 1, 0),
  ("conv7_2", 256, 3, 2, 1),
)
# L2Norm layers: (name, channels, initial scale).
NORMS = (("conv3_3_norm", 256, 10.0), ("conv4_3_norm", 512, 8.0), ("conv5_3_norm", 512, 5.0))
# Heads in output order: (source, conf channels). The source's trunk feature: conv3_3 for conv3_3_norm, ...
HEADS = (
  ("conv3_3_norm", 4),
  ("conv4_3_norm", 2),
  ("conv5_3_norm", 2),
  ("fc7", 2),
  ("conv6_2", 2),
  ("conv7_2", 2),
)
IN_CHANNELS = {"conv3_3_norm": 256, "conv4_3_norm": 512, "conv5_3_norm": 512, "fc7": 1024, "conv6_2": 512,
               "conv7_2": 256}  # fmt: skip
STRIDES = tuple(2 ** (i + 2) for i in range(len(HEADS)))  # 4, 8, ..., 128
CANDIDATE_THRESHOLD = 0.05
NMS_IOU = 0.3
SCORE_THRESHOLD = 0.5
VARIANCES = (0.1, 0.2)
MIN_SIDE = 32  # f5_3 must be >= 2 px for the 5th pool (PyTorch refuses smaller frames too)
_TORCH_HELP = "reading s3fd.pth needs PyTorch: pip install -e .[torch]"


def _norm_source(name: str) -> str:
  return name[: -len("_norm")] if name.endswith("_norm") else name


class L2Norm(nn.Module):
  """x / (sqrt(sum_c x^2) + 1e-10) * weight[c] (the original's L2Norm; param `weight`)."""

  channels: int
  init_scale: float

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    weight = self.param("weight", nn.initializers.constant(self.init_scale), (self.channels,), jnp.float32)
    x = x.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True)) + 1e-10
    return x / norm * weight


class S3FD(nn.Module):
  """S3FD on (B, H, W, 3) float32 preprocessed frames (see `preprocess`) -> the 12 head outputs, NHWC,
  float32: cls1 (B, H/4, W/4, 2), reg1 (..., 4), ..., cls6, reg6. `dtype`: the convolutions' compute
  dtype (params stay float32; L2Norm and the outputs are float32)."""

  dtype: Any = jnp.float32

  def _conv(self, name: str, features: int, kernel: int, stride: int, padding: int) -> nn.Conv:
    return nn.Conv(
      features,
      (kernel, kernel),
      strides=(stride, stride),
      padding=((padding, padding), (padding, padding)),
      dtype=self.dtype,
      param_dtype=jnp.float32,
      name=name,
    )

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    h = x.astype(self.dtype)
    feats = {}
    for layer in TRUNK:
      if layer == "pool":
        h = nn.max_pool(h, (2, 2), strides=(2, 2), padding="VALID")  # floor, as F.max_pool2d(h, 2, 2)
        continue
      name, features, kernel, stride, padding = layer
      h = nn.relu(self._conv(name, features, kernel, stride, padding)(h))
      feats[name] = h
    for name, channels, scale in NORMS:
      feats[name] = L2Norm(channels, scale, name=name)(feats[_norm_source(name)]).astype(self.dtype)
    outputs = []
    for source, conf in HEADS:
      cls = self._conv(f"{source}_mbox_conf", conf, 3, 1, 1)(feats[source]).astype(jnp.float32)
      reg = self._conv(f"{source}_mbox_loc", 4, 3, 1, 1)(feats[source]).astype(jnp.float32)
      if conf == 4:  # max-out background
        cls = jnp.concatenate([jnp.max(cls[..., :3], axis=-1, keepdims=True), cls[..., 3:]], axis=-1)
      outputs += [cls, reg]
    return outputs


# ----------------------------------------------------------------------------------------------------------
# Weights.
# ----------------------------------------------------------------------------------------------------------
def param_shapes() -> dict[str, tuple[int, ...]]:
  """PyTorch state_dict key -> shape of every S3FD parameter (the keys of the public s3fd.pth)."""
  shapes: dict[str, tuple[int, ...]] = {}
  cin = 3
  for layer in TRUNK:
    if layer == "pool":
      continue
    name, cout, kernel, _, _ = layer
    shapes[f"{name}.weight"] = (cout, cin, kernel, kernel)
    shapes[f"{name}.bias"] = (cout,)
    cin = cout
  for name, channels, _ in NORMS:
    shapes[f"{name}.weight"] = (channels,)
  for source, conf in HEADS:
    for head, cout in (("conf", conf), ("loc", 4)):
      shapes[f"{source}_mbox_{head}.weight"] = (cout, IN_CHANNELS[source], 3, 3)
      shapes[f"{source}_mbox_{head}.bias"] = (cout,)
  return shapes


def _list_keys(keys: Sequence[str], limit: int = 8) -> str:
  keys = sorted(keys)
  shown = ", ".join(repr(k) for k in keys[:limit])
  return shown + (f" (and {len(keys) - limit} more)" if len(keys) > limit else "")


def state_dict_to_variables(state: Mapping[str, Any], source: str = "<state_dict>") -> dict:
  """S3FD state_dict (torch tensors or NumPy arrays) -> {'params': ...} NumPy float32, kernels HWIO.
  Raises CheckpointError naming the missing / unexpected keys or a wrong shape."""
  shapes = param_shapes()
  missing = sorted(set(shapes) - set(state))
  unexpected = sorted(set(state) - set(shapes))
  if missing or unexpected:
    parts = []
    if missing:
      parts.append(f"missing keys {_list_keys(missing)}")
    if unexpected:
      parts.append(f"unexpected keys {_list_keys(unexpected)}")
    raise CheckpointError(
      f"{source}: not an S3FD state_dict: {'; '.join(parts)}. Pass the public s3fd.pth (a bare state_dict "
      "of face-alignment's / Wav2Lip's s3fd network)"
    )
  params: dict[str, dict[str, np.ndarray]] = {}
  for key, want in shapes.items():
    value = state[key]
    if hasattr(value, "detach"):  # a torch tensor
      value = value.detach().cpu().float().numpy()
    value = np.asarray(value, dtype=np.float32)
    if value.shape != want:
      raise CheckpointError(f"{source}: key {key!r} has shape {value.shape}, expected {want}")
    module, leaf = key.rsplit(".", 1)
    if len(want) == 4:
      params.setdefault(module, {})["kernel"] = np.ascontiguousarray(value.transpose(2, 3, 1, 0))
    elif module.endswith("_norm"):
      params.setdefault(module, {})["weight"] = value.copy()
    else:
      params.setdefault(module, {})[leaf] = value.copy()
  return {"params": params}


def load_s3fd(path: str | os.PathLike) -> dict:
  """The public `s3fd.pth` (a bare PyTorch state_dict) -> S3FD Flax variables (NumPy float32).

  Read with torch.load(weights_only=True) only. Raises CheckpointError (a ValueError) for a missing or
  unreadable file or wrong keys (naming them), ImportError when torch is not installed."""
  try:
    import torch  # noqa: F401  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError as err:
    raise ImportError(f"{os.fspath(path)}: {_TORCH_HELP}") from err
  return state_dict_to_variables(read_torch_state_dict(path), os.fspath(path))


def random_variables(seed: int = 0) -> dict:
  """He-initialised random S3FD variables (NumPy), for tests and benchmarks without s3fd.pth; the first
  conv is scaled by 1/64 so activations of (pixel - mean) inputs stay O(1) through the trunk."""
  rng = np.random.default_rng(seed)
  state = {}
  for key, shape in param_shapes().items():
    if key.endswith("_norm.weight"):
      state[key] = np.full(shape, dict((n, s) for n, _, s in NORMS)[key[: -len(".weight")]], np.float32)
    elif len(shape) == 4:
      std = np.sqrt(2.0 / np.prod(shape[1:])) / (64.0 if key.startswith("conv1_1.") else 1.0)
      state[key] = (rng.standard_normal(shape) * std).astype(np.float32)
    else:
      state[key] = (rng.standard_normal(shape) * 0.01).astype(np.float32)
  return state_dict_to_variables(state, "<random>")


# ----------------------------------------------------------------------------------------------------------
# Decode.
# ----------------------------------------------------------------------------------------------------------
def preprocess(frames: jax.Array) -> jax.Array:
  """(B, H, W, 3) uint8 BGR -> float32 RGB minus (104, 117, 123) (what Wav2Lip feeds S3FD)."""
  return frames[..., ::-1].astype(jnp.float32) - jnp.asarray(MEAN, jnp.float32)


def head_shapes(height: int, width: int) -> list[tuple[int, int]]:
  """(rows, cols) of the six heads' maps for a height x width frame."""

  def sizes(n: int) -> list[int]:
    f3 = n // 4
    f4 = f3 // 2
    f5 = f4 // 2
    f7 = f5 // 2 + 4  # pool5, then fc6: 3x3 with padding 3
    f62 = (f7 - 1) // 2 + 1  # 3x3 stride 2 padding 1
    f72 = (f62 - 1) // 2 + 1
    return [f3, f4, f5, f7, f62, f72]

  return list(zip(sizes(int(height)), sizes(int(width))))


@functools.lru_cache(maxsize=16)
def prior_boxes(height: int, width: int) -> np.ndarray:
  """(N, 4) float32 priors (cx, cy, w, h) of every cell of the six heads, in `cells` order."""
  out = []
  for (rows, cols), stride in zip(head_shapes(height, width), STRIDES):
    cy, cx = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    size = np.full(rows * cols, 4.0 * stride)
    out.append(np.stack([stride / 2 + cx.ravel() * stride, stride / 2 + cy.ravel() * stride, size, size], 1))
  priors = np.concatenate(out).astype(np.float32)
  priors.setflags(write=False)
  return priors


def cells(outputs: Sequence[jax.Array]) -> tuple[jax.Array, jax.Array]:
  """The 12 head outputs -> (face probability (B, N), loc (B, N, 4)): softmax over each head's conf
  channels, channel 1; cells in head order, each head row-major (the order of `prior_boxes`)."""
  probs, locs = [], []
  for cls, reg in zip(outputs[0::2], outputs[1::2]):
    batch = cls.shape[0]
    probs.append(jax.nn.softmax(cls, axis=-1)[..., 1].reshape(batch, -1))
    locs.append(reg.reshape(batch, -1, 4))
  return jnp.concatenate(probs, axis=1), jnp.concatenate(locs, axis=1)


def decode_boxes(loc: np.ndarray, priors: np.ndarray) -> np.ndarray:
  """(N, 4) loc + (N, 4) priors -> (N, 4) float32 corners, in the original `decode`'s operation order."""
  loc = np.asarray(loc, np.float32)
  priors = np.asarray(priors, np.float32)
  centre = priors[:, :2] + loc[:, :2] * np.float32(VARIANCES[0]) * priors[:, 2:]
  # exp in float64 rounded to float32: within 1 ulp of torch's float32 exp (numpy's own float32 exp is
  # off by an ulp for ~40% of inputs), so integer boxes match the original's.
  size = priors[:, 2:] * np.exp((loc[:, 2:] * np.float32(VARIANCES[1])).astype(np.float64)).astype(np.float32)
  top_left = centre - size / np.float32(2)
  return np.concatenate([top_left, size + top_left], axis=1)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU) -> np.ndarray:
  """Greedy NMS as the original's numpy `nms` (areas with +1, suppress IoU > `iou`), visiting boxes in
  descending score order (`argsort()[::-1]` as the original, with a stable sort: exact ties go last cell
  first); returns the kept indices in that order. One vectorised round per kept box."""
  boxes = np.asarray(boxes, np.float32)
  x1, y1, x2, y2 = boxes.T
  areas = (x2 - x1 + 1) * (y2 - y1 + 1)
  order = np.argsort(np.asarray(scores), kind="stable")[::-1]
  keep = []
  while order.size > 0:
    i, rest = order[0], order[1:]
    keep.append(i)
    w = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
    h = np.maximum(np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
    overlap = w * h / (areas[i] + areas[rest] - w * h)
    order = rest[overlap <= np.float32(iou)]
  return np.asarray(keep, np.int64)


def decode(
  prob: np.ndarray,
  loc: np.ndarray,
  priors: np.ndarray,
  score_threshold: float = SCORE_THRESHOLD,
  nms_iou: float = NMS_IOU,
) -> np.ndarray:
  """One frame's cells (`cells` output rows + `prior_boxes`) -> (K, 5) float32 rows (x1, y1, x2, y2, score)
  after NMS with score > score_threshold, best first: the original's float boxes (not clipped, not cast)."""
  prob = np.asarray(prob, np.float32)
  index = np.flatnonzero(prob > max(CANDIDATE_THRESHOLD, score_threshold))  # exact: see module docstring
  if index.size == 0:
    return np.zeros((0, 5), np.float32)
  scores = prob[index]
  boxes = decode_boxes(np.asarray(loc)[index], priors[index])
  keep = nms(boxes, scores, nms_iou)
  return np.concatenate([boxes[keep], scores[keep, None]], axis=1)


def wav2lip_faces(rows: np.ndarray, width: int, height: int) -> np.ndarray:
  """`decode` rows -> `detect_faces` rows: each box clipped at 0 and cast with int() as Wav2Lip's
  `get_detections_for_batch` does, then clipped to the frame (`face_detector.faces_array`; a box wholly outside
  the frame is dropped)."""
  boxes = np.trunc(np.clip(rows[:, :4].astype(np.float64), 0, None))
  return face_detector.faces_array(boxes, rows[:, 4], width, height)


# ----------------------------------------------------------------------------------------------------------
# The detector.
# ----------------------------------------------------------------------------------------------------------
def network_cells(model: S3FD, variables: Any, frames: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(B, H, W, 3) uint8 BGR frames -> `cells` (probability (B, N), loc (B, N, 4)); jit this."""
  return cells(model.apply(variables, preprocess(frames)))


def _is_out_of_memory(err: Exception) -> bool:
  return "RESOURCE_EXHAUSTED" in str(err) or "Out of memory" in str(err)


class S3FDDetector(face_detector.FaceDetector):
  """S3FD on whatever backend JAX has (CPU / GPU / TPU), `batch_size` frames per jitted call.

  Args:
    weights: path of the public s3fd.pth (a bare state_dict; read with weights_only=True), or a variables
      dict as `load_s3fd` returns, or an in-memory state_dict.
    batch_size: frames per call (the original: 16); the last batch is padded. Halved on out-of-memory down
      to 1 (then the error says to downscale the video).
    compute_dtype: 'float32' (default) or 'bfloat16' (convolutions only). bf16 measured ~1.4x faster on
      this CPU (AMX-BF16) but boxes are NOT identical to float32: same count, coordinates within ~1 px at
      360p, yet with random weights the best box differed from the float32 / PyTorch one in 5 of 8 (720p)
      and 7 of 8 (1080p) frames (bench/s3fd_bench.py --dtypes float32,bfloat16). Hence float32 by default.
    score_threshold, nms_iou: the original's 0.5 and 0.3.

  `detect_faces(frames)`: per frame, every face after NMS as (N, 5) rows (x1, y1, x2, y2, score), best
  first, boxes as Wav2Lip casts them (`wav2lip_faces`). Frames of one size compile once (per batch size);
  `trace_count` counts the compiles.
  """

  name = "s3fd"

  def __init__(
    self,
    weights: str | os.PathLike | Mapping | None = None,
    batch_size: int = 16,
    compute_dtype: str = "float32",
    score_threshold: float = SCORE_THRESHOLD,
    nms_iou: float = NMS_IOU,
  ):
    from lipsync_jax.inference.runner import BatchRunner  # pylint: disable=import-outside-toplevel

    if compute_dtype not in ("float32", "bfloat16"):
      raise ValueError(f"S3FDDetector: compute_dtype must be 'float32' or 'bfloat16', got {compute_dtype!r}")
    if int(batch_size) < 1:
      raise ValueError(f"S3FDDetector: batch_size must be >= 1, got {batch_size}")
    if weights is None:
      raise ValueError(
        "the 's3fd' detector needs weights=PATH of s3fd.pth (the public S3FD weights of face-alignment / "
        "Wav2Lip, not bundled: download it where you have network access), e.g. "
        "get_detector('s3fd', weights='s3fd.pth')"
      )
    if isinstance(weights, Mapping):  # variables ({'params': ...}) or an in-memory s3fd state_dict
      variables = weights if "params" in weights else state_dict_to_variables(weights)
    else:
      variables = load_s3fd(weights)
    self.model = S3FD(dtype=jnp.dtype(compute_dtype))
    self.score_threshold = float(score_threshold)
    self.nms_iou = float(nms_iou)
    self._runner_class = BatchRunner
    self._fn = functools.partial(network_cells, self.model)
    self._runners: dict[int, Any] = {}
    self._variables = jax.device_put(variables)
    self.batch_size = int(batch_size)

  @property
  def trace_count(self) -> int:
    return sum(runner.trace_count for runner in self._runners.values())

  def _runner(self, batch_size: int):
    if batch_size not in self._runners:
      self._runners[batch_size] = self._runner_class(self._fn, self._variables, batch_size)
    return self._runners[batch_size]

  def cells(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, H, W, 3) uint8 BGR frames of one size -> NumPy `cells` outputs, `batch_size` frames per call."""
    probs, locs, start = [], [], 0
    while start < len(frames):
      chunk = frames[start : start + self.batch_size]
      try:
        prob, loc = self._runner(self.batch_size).run(chunk)
      except Exception as err:  # pylint: disable=broad-except  # XLA's error type differs by backend
        if not _is_out_of_memory(err):
          raise
        if self.batch_size == 1:
          height, width = frames.shape[1:3]
          raise MemoryError(
            f"S3FD ran out of memory on one {width}x{height} frame; downscale the video (e.g. ffmpeg "
            "-vf scale=iw/2:-2) and detect on that"
          ) from err
        self.batch_size //= 2
        continue
      probs.append(prob)
      locs.append(loc)
      start += len(chunk)
    return np.concatenate(probs), np.concatenate(locs)

  def detect_faces(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    frames = [_check_frame(frame) for frame in frames]
    results: list[np.ndarray | None] = [None] * len(frames)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, frame in enumerate(frames):
      by_shape.setdefault(frame.shape, []).append(i)
    for (height, width, _), indices in by_shape.items():
      priors = prior_boxes(height, width)
      probs, locs = self.cells(np.stack([frames[i] for i in indices]))
      for i, prob, loc in zip(indices, probs, locs):
        rows = decode(prob, loc, priors, self.score_threshold, self.nms_iou)
        results[i] = wav2lip_faces(rows, width, height)
    return results  # type: ignore[return-value]


def _check_frame(frame: np.ndarray) -> np.ndarray:
  frame = np.asarray(frame)
  if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
    raise ValueError(f"S3FD expects (H, W, 3) uint8 BGR frames, got {frame.shape} {frame.dtype}")
  if min(frame.shape[:2]) < MIN_SIDE:
    raise ValueError(
      f"S3FD needs frames of at least {MIN_SIDE}x{MIN_SIDE} pixels, got {frame.shape[1]}x{frame.shape[0]}; "
      "upscale the video"
    )
  return frame
