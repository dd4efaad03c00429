"""Building blocks of the Wav2Lip networks (spec section 1), NHWC, PyTorch-exact.

Owns:
  * `BatchNorm`: PyTorch BatchNorm2d semantics (eps 1e-5, momentum 0.1, normalise with the biased batch
    variance, update the running variance with the unbiased one). Statistics are always float32.
    Variables: params {scale, bias}, batch_stats {mean, var}.
  * `ConvBN`: Conv2d (bias) -> BatchNorm -> (+ input if residual) -> ReLU.
  * `conv2d`: the Conv2d operator. For strided convolutions under transpose_impl 'phase' its input
    gradient (itself a transposed convolution) is computed by `conv_transpose_phase` through a custom VJP
    instead of XLA's input-dilated convolution (2-3x faster on XLA:CPU; values equal to float rounding).
    'direct' (the default on GPU/TPU) is the plain `lax.conv_general_dilated` and its native gradient.
  * `batch_norm_train`: batch-statistics normalisation with a hand-written VJP (the textbook
    two-reduction BatchNorm backward instead of autodiff through mean and variance: fewer passes over
    the activations on every backend).
  * `ConvTranspose`: PyTorch ConvTranspose2d semantics (incl. output_padding), two implementations with the
    same parameters: 'direct' (lax.conv_transpose) and 'phase' (one stride-1 convolution per output phase +
    depth-to-space; much faster weight gradients on XLA:CPU). 'auto' picks by backend.
  * `ConvTBN`: ConvTranspose -> BatchNorm -> ReLU.
  * `ConvLeaky`: Conv2d (bias) -> LeakyReLU(0.01).
  * `Conv`: plain Conv2d with bias and PyTorch's default initialisation.
  * `scaled_channels(c, width_multiplier)`: the channel rule shared by all networks.
  * Layer plans (the architecture as a function of the face size): `LayerSpec` (one layer: module name, op,
    channels at width 1, kernel, stride, padding, residual, output_padding, output map size), `face_size`
    (an img_size -> (H, W), checked against `SUPPORTED_FACE_SIZES`), `conv_out` / `conv_transpose_out`
    (map arithmetic), `prefix_strides` (the stride-2 prefix stages an HD input needs) and
    `annotate` (output map sizes of a plan). The per-network plans live in syncnet / wav2lip / disc.
  * `REMAT_BLOCKS`: the per-layer modules wrapped in `nn.remat` (`remat=True` on the networks).

Train/eval: modules take `train: bool`. With train=True BatchNorm uses batch statistics and updates the
running statistics when the 'batch_stats' collection is mutable (`apply(..., mutable=['batch_stats'])`);
when it is not mutable (e.g. a frozen expert evaluated with batch statistics) the update is skipped.
Under jax.jit with the batch sharded over devices, the batch mean is global (GSPMD), no axis_name needed.
Under a per-device step (`config.mesh.deterministic`, jax.shard_map) the moments and the backward's two
reductions are combined over devices by `lipsync_jax.replicas` in a fixed order (sync BatchNorm: the same
global-batch statistics); outside one, those calls are the identity.

Inference-only variant: `fold_bn=True` replaces conv + BatchNorm by one conv whose bias absorbs the
(running) statistics; see `lipsync_jax.models.fold_batch_norm`.

Initialisation is PyTorch's default (U(+-1/sqrt(fan_in)) for weights and biases), drawn from an 'rbg' key
derived from the init key (see `_fast_init_key`).

Parameter layout (so conversion from PyTorch is mechanical): conv kernels are HWIO (PyTorch (out, in, kh, kw)
transposed by (2, 3, 1, 0)); transposed-conv kernels are (kh, kw, out, in) (PyTorch (in, out, kh, kw)
transposed by the same (2, 3, 1, 0)).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from lipsync_jax import replicas

Dtype = Any
PairOrInt = int | Sequence[int]

BN_EPS = 1e-5
BN_MOMENTUM = 0.1  # PyTorch convention: running = (1 - m) * running + m * batch.


def pair(value: PairOrInt) -> tuple[int, int]:
  """(height, width) from an int or a 2-sequence."""
  if isinstance(value, int):
    return (value, value)
  value = tuple(int(v) for v in value)
  if len(value) != 2:
    raise ValueError(f"expected an int or a (height, width) pair, got {value!r}")
  return value


def scaled_channels(channels: int, width_multiplier: float) -> int:
  """Channel count of a layer under a width multiplier (1.0 = the original network)."""
  return max(1, int(round(channels * width_multiplier)))


def _fast_init_key(key):
  """An 'rbg' key derived from any key: one RngBitGenerator op per parameter instead of an unrolled
  threefry (jit-compiling the init of Wav2Lip on XLA:CPU drops from ~80 s to ~20 s on a loaded 2-core box).
  Deterministic for a given key and backend, which is all an initialiser needs."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  data = key.reshape(-1).astype(jnp.uint32)
  if data.size < 4:
    data = jnp.concatenate([data, data ^ jnp.uint32(0x9E3779B9), data, data])
  return jax.random.wrap_key_data(data[:4], impl="rbg")


def torch_uniform_init(fan_in: int):
  """PyTorch's default conv init for weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(max(1, fan_in))

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(_fast_init_key(key), shape, dtype, -bound, bound)

  return init


def resolve_transpose_impl(impl: str) -> str:
  """'auto' -> 'phase' on CPU (the direct form's weight gradient is very slow there), 'direct' elsewhere."""
  if impl == "auto":
    return "phase" if jax.default_backend() == "cpu" else "direct"
  if impl not in ("direct", "phase"):
    raise ValueError(f"transpose_impl must be 'direct', 'phase' or 'auto', got {impl!r}")
  return impl


class BatchNorm(nn.Module):
  """BatchNorm over N, H, W with PyTorch's exact semantics; statistics in float32."""

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))
    reduce_axes = tuple(range(x.ndim - 1))
    if train:
      if self.is_mutable_collection("batch_stats") and not self.is_initializing():
        # The same reductions as inside batch_norm_train (XLA merges them); no gradient flows here.
        mean, var = _batch_moments(lax.stop_gradient(x))
        count = math.prod(x.shape[a] for a in reduce_axes) * replicas.count()
        unbiased = var * (count / max(count - 1, 1))
        ra_mean.value = (1.0 - BN_MOMENTUM) * ra_mean.value + BN_MOMENTUM * mean
        ra_var.value = (1.0 - BN_MOMENTUM) * ra_var.value + BN_MOMENTUM * unbiased
      return batch_norm_train(x, scale, bias).astype(self.dtype)
    mean, var = ra_mean.value, ra_var.value
    multiplier = scale * lax.rsqrt(var + BN_EPS)
    offset = bias - mean * multiplier
    y = x.astype(jnp.float32) * multiplier + offset
    return y.astype(self.dtype)


def _batch_moments(x):
  """Mean and biased variance over all axes but the last, in float32, two-pass (exact like PyTorch).

  Per device (replicas.count() > 1) these are the global batch's: the mean of the equal-sized per-device
  means, then of the per-device mean squared deviations from that global mean."""
  axes = tuple(range(x.ndim - 1))
  x32 = x.astype(jnp.float32)
  mean = replicas.pmean(jnp.mean(x32, axis=axes))
  var = replicas.pmean(jnp.mean(jnp.square(x32 - mean), axis=axes))
  return mean, var


@jax.custom_vjp
def batch_norm_train(x, scale, bias):
  """(x - mean) / sqrt(var + eps) * scale + bias with batch statistics over N, H, W; float32 result.

  The VJP is the closed form (dx = scale / std * (g - mean(g) - xhat * mean(g * xhat))): two reductions
  and one elementwise pass, where autodiff through `_batch_moments` needs several more passes.
  """
  return _batch_norm_fwd(x, scale, bias)[0]


def _batch_norm_fwd(x, scale, bias):
  mean, var = _batch_moments(x)
  inv_std = lax.rsqrt(var + BN_EPS)
  multiplier = scale * inv_std
  y = x.astype(jnp.float32) * multiplier + (bias - mean * multiplier)
  return y, (x, mean, inv_std, scale)


def _batch_norm_bwd(residuals, g):
  x, mean, inv_std, scale = residuals
  axes = tuple(range(x.ndim - 1))
  count = math.prod(x.shape[a] for a in axes)
  g = g.astype(jnp.float32)
  x_hat = (x.astype(jnp.float32) - mean) * inv_std
  grad_bias = jnp.sum(g, axis=axes)
  grad_scale = jnp.sum(g * x_hat, axis=axes)
  # dx needs the global batch's sums (per device: summed over replicas); the parameter gradients stay this
  # device's share (the step sums those over replicas with the other gradients).
  total_bias, total_scale = replicas.psum((grad_bias, grad_scale))
  grad_x = (scale * inv_std) * (g - (total_bias + x_hat * total_scale) / (count * replicas.count()))
  return grad_x.astype(x.dtype), grad_scale, grad_bias


batch_norm_train.defvjp(_batch_norm_fwd, _batch_norm_bwd)


class Conv(nn.Module):
  """Conv2d with bias, explicit symmetric zero padding and PyTorch's default init. Kernel HWIO."""

  features: int
  kernel_size: PairOrInt
  stride: PairOrInt = 1
  padding: PairOrInt = 0
  dtype: Dtype = jnp.float32
  transpose_impl: str = "auto"  # how a strided conv's input gradient is computed (see `conv2d`)

  @nn.compact
  def __call__(self, x):
    kh, kw = pair(self.kernel_size)
    fan_in = x.shape[-1] * kh * kw
    kernel = self.param(
      "kernel", torch_uniform_init(fan_in), (kh, kw, x.shape[-1], self.features), jnp.float32
    )
    bias = self.param("bias", torch_uniform_init(fan_in), (self.features,), jnp.float32)
    y = conv2d(
      x.astype(self.dtype),
      kernel.astype(self.dtype),
      pair(self.stride),
      pair(self.padding),
      self.transpose_impl,
    )
    return y + bias.astype(self.dtype)


def _conv_native(x, kernel, strides, padding):
  (ph, pw) = padding
  return lax.conv_general_dilated(
    x,
    kernel,
    window_strides=strides,
    padding=((ph, ph), (pw, pw)),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
  )


def conv2d(x, kernel, strides: tuple[int, int], padding: tuple[int, int], transpose_impl: str = "auto"):
  """PyTorch Conv2d (no bias), NHWC x, HWIO kernel, symmetric zero padding.

  The forward is always `lax.conv_general_dilated`. A strided conv's input gradient is a transposed
  convolution; with transpose_impl 'phase' ('auto' on CPU) it is computed by `conv_transpose_phase`
  (XLA:CPU's input-dilated convolution is 2-3x slower than its stride-1 convolutions), with 'direct' by
  XLA's own gradient. Both give the same values to float rounding.
  """
  strides, padding = tuple(strides), tuple(padding)
  if strides == (1, 1) or resolve_transpose_impl(transpose_impl) == "direct":
    return _conv_native(x, kernel, strides, padding)
  return _strided_conv_phase_grad(x, kernel, strides, padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _strided_conv_phase_grad(x, kernel, strides, padding):
  return _conv_native(x, kernel, strides, padding)


def _strided_conv_fwd(x, kernel, strides, padding):
  return _conv_native(x, kernel, strides, padding), (x, kernel)


def _strided_conv_bwd(strides, padding, residuals, g):
  x, kernel = residuals
  (sh, sw), (ph, pw), (kh, kw) = strides, padding, kernel.shape[:2]
  (in_h, in_w), (out_h, out_w) = x.shape[1:3], g.shape[1:3]
  # dx = ConvTranspose2d(g) with this kernel read as (kh, kw, out=C_in, in=C_out); output_padding gives
  # back the input rows/columns the strided forward never reached.
  output_padding = (in_h + 2 * ph - kh - (out_h - 1) * sh, in_w + 2 * pw - kw - (out_w - 1) * sw)
  grad_x = conv_transpose_phase(g, kernel, strides, padding, output_padding)
  _, kernel_vjp = jax.vjp(lambda k: _conv_native(x, k, strides, padding), kernel)
  (grad_kernel,) = kernel_vjp(g)
  return grad_x.astype(x.dtype), grad_kernel


_strided_conv_phase_grad.defvjp(_strided_conv_fwd, _strided_conv_bwd)


def _phase_taps(kernel_len: int, stride: int, pad: int, phase: int) -> tuple[list[int], int]:
  """Kernel taps contributing to output positions o = stride*m + phase, and the input offset of the first.

  PyTorch ConvTranspose: y[o] = sum_{i,k : o = i*stride - pad + k} x[i] w[k]. For o = stride*m + phase,
  i = m + (phase + pad - k) / stride. Returns taps ordered by increasing input offset and that minimal
  offset d_min (taps then read x[m + d_min + j] for j = 0..len-1 with no gaps since offsets step by 1).
  """
  taps = [k for k in range(kernel_len) if (phase + pad - k) % stride == 0]
  taps.sort(key=lambda k: (phase + pad - k) // stride)
  if not taps:
    return [], 0
  return taps, (phase + pad - taps[0]) // stride


def conv_transpose_direct(x, kernel, strides, padding, output_padding):
  """PyTorch ConvTranspose2d via lax.conv_transpose. kernel (kh, kw, out, in); no bias."""
  (kh, kw), (sh, sw), (ph, pw), (oh, ow) = kernel.shape[:2], strides, padding, output_padding
  pads = ((kh - 1 - ph, kh - 1 - ph + oh), (kw - 1 - pw, kw - 1 - pw + ow))
  return lax.conv_transpose(
    x,
    kernel,
    strides=(sh, sw),
    padding=pads,
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    transpose_kernel=True,
  )


def _conv_stride1(x, kernel, pads):
  """Stride-1 NHWC/HWIO convolution with per-side padding that may be negative (= crop).

  Negative sides are cropped with a slice first: XLA:CPU (jaxlib 0.10.2) returns wrong values for a
  convolution whose padding is negative on one side and positive on the other once the input has >= 8
  channels (tests/test_models.py::test_conv_stride1_negative_padding pins this workaround).
  """
  (top, bottom), (left, right) = pads
  height, width = x.shape[1:3]
  x = x[:, max(-top, 0) : height - max(-bottom, 0), max(-left, 0) : width - max(-right, 0)]
  padding = ((max(top, 0), max(bottom, 0)), (max(left, 0), max(right, 0)))
  return lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv_transpose_phase(x, kernel, strides, padding, output_padding):
  """Same operator as `conv_transpose_direct` as stride*stride stride-1 convs + depth-to-space."""
  kh, kw = kernel.shape[:2]
  (sh, sw), (ph, pw), (oh, ow) = strides, padding, output_padding
  batch, in_h, in_w, _ = x.shape
  out_h = (in_h - 1) * sh - 2 * ph + kh + oh
  out_w = (in_w - 1) * sw - 2 * pw + kw + ow
  n_h, n_w = -(-out_h // sh), -(-out_w // sw)  # positions per phase (ceil); extra ones are cropped.
  # Forward-conv kernel (HWIO with I=in, O=out) of the transposed op, before tap selection.
  forward_kernel = jnp.transpose(kernel, (0, 1, 3, 2))
  rows = []
  for a in range(sh):
    taps_h, d_h = _phase_taps(kh, sh, ph, a)
    cols = []
    for b in range(sw):
      taps_w, d_w = _phase_taps(kw, sw, pw, b)
      if not taps_h or not taps_w:
        cols.append(jnp.zeros((batch, n_h, n_w, kernel.shape[2]), x.dtype))
        continue
      # Static slices (not a gather): cheap forward and weight gradient.
      sub = jnp.stack([jnp.stack([forward_kernel[i, j] for j in taps_w]) for i in taps_h])
      pads = (
        (-d_h, n_h - 1 + d_h + len(taps_h) - 1 - (in_h - 1)),
        (-d_w, n_w - 1 + d_w + len(taps_w) - 1 - (in_w - 1)),
      )
      cols.append(_conv_stride1(x, sub, pads))
    rows.append(jnp.stack(cols, axis=3))  # (B, n_h, n_w, sw, C)
  y = jnp.stack(rows, axis=2)  # (B, n_h, sh, n_w, sw, C)
  y = y.reshape(batch, n_h * sh, n_w * sw, kernel.shape[2])
  return y[:, :out_h, :out_w]


TRANSPOSE_IMPLS = {"direct": conv_transpose_direct, "phase": conv_transpose_phase}


class ConvTranspose(nn.Module):
  """PyTorch ConvTranspose2d (with bias). Kernel (kh, kw, out, in); impl 'direct' | 'phase' | 'auto'."""

  features: int
  kernel_size: PairOrInt
  stride: PairOrInt = 1
  padding: PairOrInt = 0
  output_padding: PairOrInt = 0
  transpose_impl: str = "auto"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kh, kw = pair(self.kernel_size)
    in_features = x.shape[-1]
    fan_in = self.features * kh * kw  # PyTorch computes fan_in from weight.size(1) = out channels.
    kernel = self.param(
      "kernel", torch_uniform_init(fan_in), (kh, kw, self.features, in_features), jnp.float32
    )
    bias = self.param("bias", torch_uniform_init(fan_in), (self.features,), jnp.float32)
    impl = TRANSPOSE_IMPLS[resolve_transpose_impl(self.transpose_impl)]
    y = impl(
      x.astype(self.dtype),
      kernel.astype(self.dtype),
      pair(self.stride),
      pair(self.padding),
      pair(self.output_padding),
    )
    return y + bias.astype(self.dtype)


class ConvBN(nn.Module):
  """Conv2d -> BatchNorm -> (+x if residual) -> ReLU. With fold_bn: Conv2d (folded bias) -> ... -> ReLU."""

  features: int
  kernel_size: PairOrInt
  stride: PairOrInt = 1
  padding: PairOrInt = 0
  residual: bool = False
  fold_bn: bool = False
  dtype: Dtype = jnp.float32
  transpose_impl: str = "auto"

  @nn.compact
  def __call__(self, x, train: bool = False):
    y = Conv(
      self.features,
      self.kernel_size,
      self.stride,
      self.padding,
      dtype=self.dtype,
      transpose_impl=self.transpose_impl,
      name="conv",
    )(x)
    if not self.fold_bn:
      y = BatchNorm(dtype=self.dtype, name="bn")(y, train=train)
    if self.residual:
      if y.shape != x.shape:
        raise ValueError(
          f"{self.name}: residual block needs equal input/output shapes, got {x.shape} -> {y.shape}"
        )
      y = y + x.astype(y.dtype)
    return nn.relu(y)


class ConvTBN(nn.Module):
  """ConvTranspose2d (PyTorch semantics) -> BatchNorm -> ReLU."""

  features: int
  kernel_size: PairOrInt
  stride: PairOrInt = 1
  padding: PairOrInt = 0
  output_padding: PairOrInt = 0
  transpose_impl: str = "auto"
  fold_bn: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    y = ConvTranspose(
      self.features,
      self.kernel_size,
      self.stride,
      self.padding,
      self.output_padding,
      transpose_impl=self.transpose_impl,
      dtype=self.dtype,
      name="conv",
    )(x)
    if not self.fold_bn:
      y = BatchNorm(dtype=self.dtype, name="bn")(y, train=train)
    return nn.relu(y)


class ConvLeaky(nn.Module):
  """Conv2d -> LeakyReLU(0.01) (the discriminator's block; no normalisation)."""

  features: int
  kernel_size: PairOrInt
  stride: PairOrInt = 1
  padding: PairOrInt = 0
  dtype: Dtype = jnp.float32
  transpose_impl: str = "auto"

  @nn.compact
  def __call__(self, x):
    y = Conv(
      self.features,
      self.kernel_size,
      self.stride,
      self.padding,
      dtype=self.dtype,
      transpose_impl=self.transpose_impl,
      name="conv",
    )(x)
    return nn.leaky_relu(y, negative_slope=0.01)


def l2_normalize(x, eps: float = 1e-12):
  """F.normalize(x, dim=-1) as x * rsqrt(max(sum(x^2), eps^2)): finite gradient at x = 0. float32."""
  x = x.astype(jnp.float32)
  return x * lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=-1, keepdims=True), eps * eps))


# ----------------------------------------------------------------------------------------------------------
# Layer plans: the architecture as a function of the face size.
# ----------------------------------------------------------------------------------------------------------

# Face sizes (H, W) every network is defined for: 96 is the original; each HD size adds stride-2 prefix
# stages in front of the original tables (see docs/models.md). Non-square 192x288 (HxW) needs one halving
# of the rows and two of the columns: the prefix stages then have stride (2, 2) and (1, 2).
SUPPORTED_FACE_SIZES = ((96, 96), (192, 192), (288, 288), (192, 288))


@dataclasses.dataclass(frozen=True)
class LayerSpec:
  """One layer of a plan. `channels` at width 1 (modules scale them); `out_size` is the output (H, W).

  op: 'conv' (ConvBN / ConvLeaky), 'convT' (ConvTBN), 'plain' (a Conv with bias only).
  """

  name: str
  op: str
  channels: int
  kernel: tuple[int, int]
  stride: tuple[int, int]
  padding: tuple[int, int]
  residual: bool = False
  output_padding: tuple[int, int] = (0, 0)
  out_size: tuple[int, int] = (0, 0)


def face_size(img_size: PairOrInt) -> tuple[int, int]:
  """An img_size (int side or (H, W)) -> (H, W); ValueError unless the networks are defined for it."""
  size = pair(img_size)
  if size not in SUPPORTED_FACE_SIZES:
    names = ", ".join(f"{h}" if h == w else f"{h}x{w} (HxW)" for h, w in SUPPORTED_FACE_SIZES)
    raise ValueError(
      f"face size {size[0]}x{size[1]} (img_size={img_size!r}) is not supported by the Wav2Lip networks; "
      f"supported sizes: {names}. Preprocess the faces at one of them (--img_size)."
    )
  return size


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
  """Output length of a convolution along one axis (PyTorch Conv2d)."""
  return (size + 2 * padding - kernel) // stride + 1


def conv_transpose_out(size: int, kernel: int, stride: int, padding: int, output_padding: int = 0) -> int:
  """Output length of a transposed convolution along one axis (PyTorch ConvTranspose2d)."""
  return (size - 1) * stride - 2 * padding + kernel + output_padding


def prefix_strides(size: tuple[int, int], limit: tuple[int, int]) -> list[tuple[int, int]]:
  """Strides of the k3/p1 prefix stages that halve each axis of `size` until it is <= its `limit`.

  One stage per halving of the axis that needs the most; an axis already small enough gets stride 1.
  [] for the original 96 input, [(2, 2)] at 192, [(2, 2), (2, 2)] at 288, [(2, 2), (1, 2)] at 192x288.
  """
  strides, (h, w) = [], size
  while h > limit[0] or w > limit[1]:
    stride = (2 if h > limit[0] else 1, 2 if w > limit[1] else 1)
    h, w = conv_out(h, 3, stride[0], 1), conv_out(w, 3, stride[1], 1)
    strides.append(stride)
  return strides


def spec(
  name: str, channels: int, kernel: PairOrInt, stride: PairOrInt, padding: PairOrInt, **fields
) -> LayerSpec:
  """A LayerSpec (op 'conv' unless given) from a (channels, kernel, stride, padding) row of a table."""
  fields.setdefault("op", "conv")
  kernel, stride, padding = pair(kernel), pair(stride), pair(padding)
  return LayerSpec(name, channels=channels, kernel=kernel, stride=stride, padding=padding, **fields)


def annotate(layers: Sequence[LayerSpec], size: tuple[int, int]) -> list[LayerSpec]:
  """`layers` with their `out_size` filled in, for an input map of `size` (H, W)."""
  out = []
  for layer in layers:
    if layer.op == "convT":
      size = tuple(
        conv_transpose_out(n, k, s, p, o)
        for n, k, s, p, o in zip(size, layer.kernel, layer.stride, layer.padding, layer.output_padding)
      )
    else:
      size = tuple(
        conv_out(n, k, s, p) for n, k, s, p in zip(size, layer.kernel, layer.stride, layer.padding)
      )
    if min(size) < 1:
      raise ValueError(f"layer {layer.name} has an empty output map {size}")
    out.append(dataclasses.replace(layer, out_size=size))
  return out


# `remat=True` on the networks wraps every conv layer (the per-block modules, so the parameter tree keeps
# its names) in `nn.remat`: only each layer's input is kept for the backward pass and the conv + BatchNorm
# + activation are recomputed. `train` (argument 2 counting self) is static: it selects Python branches.
REMAT_BLOCKS = {
  ConvBN: nn.remat(ConvBN, static_argnums=(2,)),
  ConvTBN: nn.remat(ConvTBN, static_argnums=(2,)),
  ConvLeaky: nn.remat(ConvLeaky),
}


def block_class(cls: type[nn.Module], remat: bool) -> type[nn.Module]:
  """`cls` itself, or its `nn.remat` version (call it with `train` positional: it is a static argument)."""
  return REMAT_BLOCKS[cls] if remat else cls
