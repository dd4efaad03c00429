"""Tests for lipsync_jax.models: parameter counts, shapes, PyTorch parity (eval and train mode),
BatchNorm semantics, transposed-conv implementations, bf16, sharded batches, BN folding."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch_reference as tr  # tests/ is on sys.path under pytest (rootdir conftest)

from lipsync_jax import weights
from lipsync_jax.models import MODELS, QualityDisc, SyncNet, Wav2Lip, example_inputs, fold_batch_norm, layers
from lipsync_jax.models.syncnet import SYNCNET_AUDIO_ENCODER

TINY = 0.125
PARAM_COUNTS = {"syncnet": 16_435_072, "wav2lip": 36_298_035, "disc": 14_113_793}


def random_inputs(kind: str, batch: int, seed: int, img_size: int = 96) -> list[np.ndarray]:
  rng = np.random.default_rng(seed)
  mel = rng.uniform(-4, 4, (batch, 80, 16, 1)).astype(np.float32)
  if kind == "syncnet":
    return [mel, rng.random((batch, img_size // 2, img_size, 15), np.float32)]
  if kind == "wav2lip":
    return [mel, rng.random((batch, img_size, img_size, 6), np.float32)]
  return [rng.random((batch, img_size, img_size, 3), np.float32)]


@functools.cache
def tiny_variables(kind: str):
  """Variables of the width-TINY model (initialised once per session; init compiles slowly on CPU)."""
  return jax.jit(MODELS[kind](width_multiplier=TINY).init)(jax.random.key(0), *example_inputs(kind))


def to_nchw(arrays):
  return [torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))) for a in arrays]


def count(tree) -> int:
  return sum(int(np.size(x)) for x in jax.tree.leaves(tree))


@pytest.fixture(scope="module", params=["syncnet", "wav2lip", "disc"])
def reference(request, tmp_path_factory):
  """(kind, torch model in eval mode with random weights + BN stats, path of its official-format file)."""
  kind = request.param
  model = tr.randomize(tr.REFERENCES[kind](), seed=1, conv_gain=2.45 if kind == "disc" else 1.0)
  tr.calibrate(model, *to_nchw(random_inputs(kind, 4, seed=100)), seed=2)
  path = tmp_path_factory.mktemp(kind) / f"{kind}.pth"
  tr.save_official(model, path)
  return kind, model, path


@pytest.mark.parametrize("kind", sorted(PARAM_COUNTS))
def test_parameter_counts_match_the_originals(kind):
  variables = jax.eval_shape(MODELS[kind]().init, jax.random.key(0), *example_inputs(kind))
  assert count(variables["params"]) == PARAM_COUNTS[kind]
  torch_count = sum(p.numel() for p in tr.REFERENCES[kind]().parameters())
  assert torch_count == PARAM_COUNTS[kind]
  small = jax.eval_shape(MODELS[kind](width_multiplier=0.5).init, jax.random.key(0), *example_inputs(kind))
  assert count(small["params"]) < PARAM_COUNTS[kind] / 3


def test_eval_parity_with_pytorch(reference):
  kind, model, path = reference
  variables = weights.load(path, kind)[0]
  inputs = random_inputs(kind, 2, seed=7)
  with torch.no_grad():
    expected = model(*to_nchw(inputs))
  got = jax.jit(MODELS[kind]().apply)(variables, *inputs)
  if kind == "syncnet":
    for g, e in zip(got, expected):
      assert np.abs(np.asarray(g) - e.numpy()).max() < 1e-4
      assert e.numpy().std() > 1e-3  # Embeddings are not degenerate.
  elif kind == "wav2lip":
    e = expected.numpy().transpose(0, 2, 3, 1)
    assert got.shape == (2, 96, 96, 3)
    assert np.abs(np.asarray(got) - e).max() < 1e-4
    assert 0.02 < e.std() < 0.45  # Not saturated, not constant.
  else:
    assert got.shape == (2, 1)
    assert np.abs(np.asarray(got) - expected.numpy()).max() < 1e-4
    assert 0.01 < expected.numpy().min() and expected.numpy().max() < 0.99


def test_syncnet_train_mode_parity_and_running_stats():
  model = tr.randomize(tr.SyncNetColor(), seed=3)
  tr.calibrate(model, *to_nchw(random_inputs("syncnet", 4, seed=101)), seed=4)
  variables = weights.torch_state_dict_to_variables("syncnet", model.state_dict())
  inputs = random_inputs("syncnet", 6, seed=8)
  model.train()
  with torch.no_grad():
    expected = model(*to_nchw(inputs))
  train_step = jax.jit(lambda v, m, f: SyncNet().apply(v, m, f, train=True, mutable=["batch_stats"]))
  (audio, face), updates = train_step(variables, *inputs)
  assert np.abs(np.asarray(audio) - expected[0].numpy()).max() < 1e-4
  assert np.abs(np.asarray(face) - expected[1].numpy()).max() < 1e-4
  new_state = weights.variables_to_torch_state_dict("syncnet", {"params": variables["params"], **updates})
  for key, value in model.state_dict().items():
    if key.endswith(("running_mean", "running_var")):
      np.testing.assert_allclose(new_state[key], value.numpy(), rtol=1e-4, atol=1e-5, err_msg=key)
  # The update really moved the statistics.
  old_state = weights.variables_to_torch_state_dict("syncnet", variables)
  assert (
    np.abs(
      new_state["face_encoder.3.conv_block.1.running_var"]
      - old_state["face_encoder.3.conv_block.1.running_var"]
    ).max()
    > 1e-3
  )


@pytest.mark.parametrize("impl", ["direct", "phase"])
def test_syncnet_train_mode_gradients_match_pytorch(impl):
  """Backward parity at full size against float64 PyTorch: the hand-written BatchNorm VJP and, with
  'phase', the strided convs' transposed-conv input gradient. Per-tensor relative L2 error, because a
  random deep ReLU net in float32 flips a few near-zero activations (max-abs error is dominated by those:
  float32 PyTorch itself is off by up to ~1e-2 max-abs here); a wrong formula gives O(1) errors."""
  model = tr.randomize(tr.SyncNetColor(), seed=5)
  tr.calibrate(model, *to_nchw(random_inputs("syncnet", 4, seed=102)), seed=6)
  variables = weights.torch_state_dict_to_variables("syncnet", model.state_dict())
  mel, faces = random_inputs("syncnet", 4, seed=9)
  target = np.random.default_rng(10).normal(size=(4, 512)).astype(np.float32)
  model = model.double().train()
  mel_t, faces_t = (t.double().requires_grad_() for t in to_nchw([mel, faces]))
  audio_t, face_t = model(mel_t, faces_t)
  ref_loss = (audio_t * face_t).sum() + (face_t * torch.from_numpy(target).double()).sum()
  ref_loss.backward()
  # Conv biases right before train-mode BatchNorm are left out: their true gradient is 0.
  ref_grads = {k: p.grad.numpy() for k, p in model.named_parameters() if "conv_block.0.bias" not in k}
  ref_faces = faces_t.grad.numpy().transpose(0, 2, 3, 1)

  def loss(params, mel, faces):
    (audio, face), _ = SyncNet(transpose_impl=impl).apply(
      {"params": params, "batch_stats": variables["batch_stats"]},
      mel,
      faces,
      train=True,
      mutable=["batch_stats"],
    )
    return jnp.sum(audio * face) + jnp.sum(face * target)

  value, (grads, grad_faces) = jax.jit(jax.value_and_grad(loss, argnums=(0, 2)))(
    variables["params"], mel, faces
  )
  assert abs(float(value) - ref_loss.item()) < 1e-3
  got = weights.variables_to_torch_state_dict(
    "syncnet", {"params": grads, "batch_stats": variables["batch_stats"]}
  )
  assert len(ref_grads) > 60
  for key, want in ref_grads.items():
    assert np.linalg.norm(got[key] - want) / np.linalg.norm(want) < 2e-2, key
  assert np.linalg.norm(np.asarray(grad_faces) - ref_faces) / np.linalg.norm(ref_faces) < 2e-2


@pytest.mark.parametrize(
  "shape,kernel,stride,padding",
  [
    ((2, 24, 48, 8), 5, (1, 2), 1),
    ((2, 23, 24, 16), 3, (2, 2), 1),
    ((2, 27, 16, 8), 3, (3, 3), 1),
    ((2, 9, 6, 16), 3, (3, 2), 1),
    ((2, 7, 7, 8), 3, (2, 2), 0),
    ((2, 12, 12, 8), 4, (2, 2), 1),
  ],
)
def test_strided_conv_phase_gradient_equals_native(shape, kernel, stride, padding):
  rng = np.random.default_rng(11)
  x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
  w = jnp.asarray(rng.normal(size=(kernel, kernel, shape[-1], 12)).astype(np.float32))

  def loss(impl):
    return lambda x, w: jnp.sum(jnp.sin(layers.conv2d(x, w, stride, (padding, padding), impl)))

  (value_d, grads_d), (value_p, grads_p) = (
    jax.jit(jax.value_and_grad(loss(impl), argnums=(0, 1)))(x, w) for impl in ("direct", "phase")
  )
  assert float(value_d) == float(value_p)  # Same forward op.
  for a, b in zip(grads_d, grads_p):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-4 * float(jnp.abs(a).max()))


def test_conv_stride1_negative_padding_is_a_crop():
  """Pins the workaround in layers._conv_stride1: padding (-1, +1) with >= 8 channels is a crop + pad."""
  rng = np.random.default_rng(12)
  x = rng.normal(size=(1, 9, 6, 16)).astype(np.float32)
  w = jnp.asarray(rng.normal(size=(1, 2, 16, 16)).astype(np.float32))
  pads = ((-1, 1), (0, -1))
  got = layers._conv_stride1(jnp.asarray(x), w, pads)  # pylint: disable=protected-access
  cropped = np.pad(x[:, 1:, :5], ((0, 0), (0, 1), (0, 0), (0, 0)))
  expected = jax.lax.conv_general_dilated(
    jnp.asarray(cropped), w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-5)


def test_batch_norm_vjp_equals_autodiff_of_the_formula():
  rng = np.random.default_rng(13)
  x = jnp.asarray(rng.normal(1.0, 3.0, (4, 6, 5, 7)).astype(np.float32))
  scale, bias = (jnp.asarray(rng.normal(size=7).astype(np.float32)) for _ in range(2))
  weights = jnp.asarray(rng.normal(size=x.shape).astype(np.float32))

  def formula(x, scale, bias):
    mean = jnp.mean(x, axis=(0, 1, 2))
    var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
    return (x - mean) * jax.lax.rsqrt(var + layers.BN_EPS) * scale + bias

  def loss(fn):
    return lambda *args: jnp.sum(jnp.tanh(fn(*args)) * weights)

  np.testing.assert_allclose(layers.batch_norm_train(x, scale, bias), formula(x, scale, bias), atol=1e-5)
  for got, want in zip(
    jax.grad(loss(layers.batch_norm_train), argnums=(0, 1, 2))(x, scale, bias),
    jax.grad(loss(formula), argnums=(0, 1, 2))(x, scale, bias),
  ):
    np.testing.assert_allclose(got, want, atol=2e-5 * float(jnp.abs(want).max()) + 1e-6)
  # bf16 activations: gradient comes back in the input dtype.
  assert jax.grad(loss(layers.batch_norm_train))(x.astype(jnp.bfloat16), scale, bias).dtype == jnp.bfloat16


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_batch_norm_matches_pytorch_train_step(dtype):
  rng = np.random.default_rng(0)
  x = rng.normal(2.0, 3.0, (4, 5, 6, 7)).astype(np.float32)
  bn_torch = torch.nn.BatchNorm2d(7)
  bn_torch.train()
  with torch.no_grad():
    expected = bn_torch(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  bn = layers.BatchNorm(dtype=dtype)
  variables = bn.init(jax.random.key(0), jnp.asarray(x))
  y, updates = bn.apply(variables, jnp.asarray(x, dtype), train=True, mutable=["batch_stats"])
  assert y.dtype == dtype
  assert updates["batch_stats"]["mean"].dtype == jnp.float32
  tol = 1e-5 if dtype == jnp.float32 else 5e-2
  np.testing.assert_allclose(np.asarray(y, np.float32), expected, atol=tol * 10, rtol=tol)
  np.testing.assert_allclose(
    updates["batch_stats"]["mean"], bn_torch.running_mean.numpy(), rtol=tol, atol=tol
  )
  np.testing.assert_allclose(updates["batch_stats"]["var"], bn_torch.running_var.numpy(), rtol=tol, atol=tol)
  # Not mutable: batch statistics are used, running statistics stay as they are.
  y2 = bn.apply(variables, jnp.asarray(x, dtype), train=True)
  np.testing.assert_allclose(np.asarray(y2, np.float32), np.asarray(y, np.float32), atol=1e-6)


@pytest.mark.parametrize("config", [(3, 2, 1, 1), (3, 1, 0, 0), (4, 2, 1, 0), (5, 3, 2, 1), (3, 2, 0, 1)])
def test_transposed_conv_direct_and_phase_match_pytorch(config):
  kernel, stride, padding, output_padding = config
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 5, 6, 7)).astype(np.float32)
  conv = torch.nn.ConvTranspose2d(7, 4, kernel, stride, padding, output_padding)
  with torch.no_grad():
    expected = conv(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  weight = jnp.asarray(conv.weight.detach().numpy().transpose(2, 3, 1, 0))
  bias = conv.bias.detach().numpy()
  for impl, fn in layers.TRANSPOSE_IMPLS.items():
    got = fn(jnp.asarray(x), weight, (stride, stride), (padding, padding), (output_padding, output_padding))
    assert got.shape == expected.shape, impl
    np.testing.assert_allclose(np.asarray(got) + bias, expected, atol=1e-5, err_msg=impl)


def test_transpose_impls_agree_in_value_and_gradient():
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 6, 6, 16)).astype(np.float32))
  direct = layers.ConvTBN(8, 3, 2, 1, 1, transpose_impl="direct")
  phase = layers.ConvTBN(8, 3, 2, 1, 1, transpose_impl="phase")
  variables = direct.init(jax.random.key(0), x)

  def loss(params, inputs, model):
    out, _ = model.apply(
      {"params": params, "batch_stats": variables["batch_stats"]}, inputs, train=True, mutable=["batch_stats"]
    )
    return jnp.mean(jnp.square(out - 0.5) * jnp.arange(out.size).reshape(out.shape) / out.size)

  grad_fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)
  (value_d, grads_d), (value_p, grads_p) = (
    grad_fn(variables["params"], x, direct),
    grad_fn(variables["params"], x, phase),
  )
  assert abs(float(value_d) - float(value_p)) < 1e-6
  for a, b in zip(jax.tree.leaves(grads_d), jax.tree.leaves(grads_p)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4)

  # Whole generator, both implementations, same parameters.
  mel, faces = random_inputs("wav2lip", 2, seed=3)
  gen_vars = tiny_variables("wav2lip")
  outs = [
    jax.jit(Wav2Lip(width_multiplier=TINY, transpose_impl=impl).apply)(gen_vars, mel, faces)
    for impl in ("direct", "phase")
  ]
  np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)
  with pytest.raises(ValueError, match="transpose_impl"):
    layers.resolve_transpose_impl("fast")


def test_shapes_time_major_and_logits():
  mel, faces = random_inputs("wav2lip", 6, seed=4)
  gen = Wav2Lip(width_multiplier=TINY)
  variables = tiny_variables("wav2lip")
  flat = jax.jit(gen.apply)(variables, mel, faces)
  assert flat.shape == (6, 96, 96, 3) and float(flat.min()) >= 0 and float(flat.max()) <= 1
  timed = jax.jit(gen.apply)(variables, mel.reshape(2, 3, 80, 16, 1), faces.reshape(2, 3, 96, 96, 6))
  assert timed.shape == (2, 3, 96, 96, 3)
  np.testing.assert_allclose(np.asarray(timed).reshape(6, 96, 96, 3), flat, atol=1e-6)

  disc = QualityDisc(width_multiplier=TINY)
  dvars = tiny_variables("disc")
  assert set(dvars) == {"params"}
  probs = jax.jit(disc.apply)(dvars, flat)
  logits = jax.jit(functools.partial(disc.apply, return_logits=True))(dvars, flat)
  np.testing.assert_allclose(probs, jax.nn.sigmoid(logits), atol=1e-6)
  np.testing.assert_allclose(disc.apply(dvars, flat, method=QualityDisc.logits), logits, atol=1e-6)
  assert probs.shape == (6, 1)
  # The discriminator looks only at the lower half.
  changed = np.asarray(flat).copy()
  changed[:, :40] = 0.0
  np.testing.assert_allclose(disc.apply(dvars, changed), probs, atol=1e-6)

  sync = SyncNet(width_multiplier=TINY)
  smel, sfaces = random_inputs("syncnet", 3, seed=5)
  svars = tiny_variables("syncnet")
  audio, face = sync.apply(svars, smel, sfaces)
  assert audio.shape == face.shape == (3, sync.embed_dim) and sync.embed_dim == 64
  np.testing.assert_allclose(np.linalg.norm(audio, axis=-1), 1.0, atol=1e-5)
  with pytest.raises(ValueError, match="faces"):
    sync.apply(svars, smel, sfaces[..., :3])


def test_l2_normalize_has_finite_gradient_at_zero():
  grad = jax.grad(lambda x: jnp.sum(layers.l2_normalize(x) * jnp.arange(4.0)))(jnp.zeros((2, 4)))
  assert np.all(np.isfinite(grad))
  np.testing.assert_allclose(layers.l2_normalize(jnp.array([[3.0, 4.0]])), [[0.6, 0.8]], atol=1e-7)

  sync = SyncNet(width_multiplier=TINY)
  mel, faces = random_inputs("syncnet", 2, seed=6)
  variables = tiny_variables("syncnet")
  # Kill the last audio layer so the audio embedding is exactly zero; gradients must stay finite.
  params = jax.tree.map(lambda x: x, variables["params"])
  last = f"audio_encoder_{len(SYNCNET_AUDIO_ENCODER) - 1}"
  params[last]["bn"]["bias"] = jnp.full_like(params[last]["bn"]["bias"], -1e3)

  def loss(p):
    audio, face = sync.apply({"params": p, "batch_stats": variables["batch_stats"]}, mel, faces)
    return jnp.sum(audio * face)

  value, grads = jax.jit(jax.value_and_grad(loss))(params)
  assert float(value) == 0.0
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_bfloat16_compute_keeps_float32_params_and_tracks_float32():
  mel, faces = random_inputs("wav2lip", 2, seed=9)
  f32, bf16 = Wav2Lip(width_multiplier=TINY), Wav2Lip(width_multiplier=TINY, compute_dtype=jnp.bfloat16)
  variables = tiny_variables("wav2lip")
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
  _, updates = jax.jit(lambda v: bf16.apply(v, mel, faces, train=True, mutable=["batch_stats"]))(variables)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(updates))
  # Eval mode (train-mode BN over 1x1 maps at batch 2 amplifies rounding by design).
  out16, out32 = jax.jit(bf16.apply)(variables, mel, faces), jax.jit(f32.apply)(variables, mel, faces)
  assert out16.dtype == jnp.float32
  assert np.all(np.isfinite(out16)) and np.abs(np.asarray(out16) - np.asarray(out32)).max() < 0.05
  audio, face = SyncNet(width_multiplier=TINY, compute_dtype=jnp.bfloat16).apply(
    tiny_variables("syncnet"), *random_inputs("syncnet", 2, 1)
  )
  assert audio.dtype == jnp.float32 and np.all(np.isfinite(face))


def test_sharded_batch_uses_global_batch_statistics():
  devices = jax.devices()
  if len(devices) < 2:
    pytest.skip("needs several (fake) devices")
  mesh = jax.sharding.Mesh(np.array(devices), ("data",))
  batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  mel, faces = random_inputs("syncnet", len(devices), seed=10)
  sync = SyncNet(width_multiplier=TINY)
  variables = tiny_variables("syncnet")
  step = jax.jit(lambda v, m, f: sync.apply(v, m, f, train=True, mutable=["batch_stats"]))
  single = step(variables, mel, faces)
  sharded = step(variables, jax.device_put(mel, batch), jax.device_put(faces, batch))
  for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(sharded)):
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("kind", ["syncnet", "wav2lip"])
def test_fold_batch_norm_gives_equal_eval_outputs(kind):
  inputs = random_inputs(kind, 2, seed=11)
  model = MODELS[kind](width_multiplier=TINY)
  variables = tiny_variables(kind)
  # Non-trivial BN statistics: one train-mode update.
  _, updates = jax.jit(lambda v: model.apply(v, *inputs, train=True, mutable=["batch_stats"]))(variables)
  variables = {"params": variables["params"], **updates}
  folded = fold_batch_norm(kind, variables)
  assert "batch_stats" not in folded
  expected = jax.jit(model.apply)(variables, *inputs)
  got = jax.jit(MODELS[kind](width_multiplier=TINY, fold_bn=True).apply)(folded, *inputs)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, atol=1e-5)
