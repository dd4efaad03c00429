"""Tests for the HD networks (lipsync_jax.models at 192 / 288 / 192x288): layer plans, output shapes,
parameter counts, the unsupported-size error, remat equivalence, BN folding and time-major input at 192.

Full-width numbers come from `jax.eval_shape` (tracing only); what runs is at width 1/32."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipsync_jax.models import MODELS, TRANSPOSED_CONV, Wav2Lip, disc, example_inputs, fold_batch_norm
from lipsync_jax.models import syncnet as expert
from lipsync_jax.models import wav2lip as generator

TINY = 1 / 32
KINDS = ("syncnet", "wav2lip", "disc")
SIZES = (96, 192, 288, (192, 288))
# Parameters at width 1 (docs/models.md, bench/model_tables.py); 96 is the original networks.
PARAM_COUNTS = {
  ("syncnet", 96): 16_435_072,
  ("syncnet", 192): 16_484_768,
  ("syncnet", 288): 16_512_704,
  ("wav2lip", 96): 36_298_035,
  ("wav2lip", 192): 36_363_123,
  ("wav2lip", 288): 36_428_211,
  ("disc", 96): 14_113_793,
  ("disc", 192): 14_169_409,
  ("disc", 288): 14_187_905,
}


def inputs(kind: str, batch: int, size, seed: int = 0) -> list[np.ndarray]:
  """Random inputs for faces of `size` (int or (H, W))."""
  height, width = (size, size) if isinstance(size, int) else size
  rng = np.random.default_rng(seed)
  mel = rng.uniform(-4, 4, (batch, 80, 16, 1)).astype(np.float32)
  if kind == "syncnet":
    return [mel, rng.random((batch, height // 2, width, 15), np.float32)]
  if kind == "wav2lip":
    return [mel, rng.random((batch, height, width, 6), np.float32)]
  return [rng.random((batch, height, width, 3), np.float32)]


def count(tree) -> int:
  return sum(int(np.size(x)) for x in jax.tree.leaves(tree))


def abstract_variables(kind: str, size, width: float = 1.0, **kwargs):
  model = MODELS[kind](width_multiplier=width, **kwargs)
  return jax.eval_shape(model.init, jax.random.key(0), *inputs(kind, 1, size))


def last_encoder_layer(kind: str, size):
  if kind == "syncnet":
    return expert.face_encoder_plan(size)[-1]
  if kind == "wav2lip":
    return generator.face_encoder_plan(size)[-1][-1]
  return disc.face_encoder_plan(size)[-2][-1]  # the last block is binary_pred_0


@pytest.mark.parametrize("kind,size", sorted(PARAM_COUNTS))
def test_parameter_counts_at_width_1(kind, size):
  variables = abstract_variables(kind, size)
  assert count(variables["params"]) == PARAM_COUNTS[kind, size]
  # The extra stages are cheap 32-channel ones: HD adds under 0.6 % to any network.
  assert count(variables["params"]) < 1.006 * PARAM_COUNTS[kind, 96]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", KINDS)
def test_bottleneck_is_1x1_and_output_shapes(kind, size):
  height, width = (size, size) if isinstance(size, int) else size
  assert last_encoder_layer(kind, size).out_size == (1, 1)
  model = MODELS[kind](width_multiplier=1 / 16)
  args = inputs(kind, 2, size)
  variables = jax.eval_shape(model.init, jax.random.key(0), *args)
  out = jax.eval_shape(model.apply, variables, *args)
  if kind == "syncnet":
    assert [o.shape for o in out] == [(2, 32), (2, 32)]
  elif kind == "wav2lip":
    assert out.shape == (2, height, width, 3)
    time_major = jax.eval_shape(model.apply, variables, args[0][None], args[1][None])
    assert time_major.shape == (1, 2, height, width, 3)
  else:
    assert out.shape == (2, 1)


@pytest.mark.parametrize("size,prefix_stages", [(96, 0), (192, 1), (288, 2), ((192, 288), 2)])
def test_prefix_stages_and_map_sizes(size, prefix_stages):
  encoder = generator.face_encoder_plan(size)
  assert len(encoder) == 7 + prefix_stages
  # From the block where the original table starts, the maps are the 96 model's (192) or smaller.
  original = [block[-1].out_size for block in generator.face_encoder_plan(96)[1:]]
  hd = [block[-1].out_size for block in encoder[1 + prefix_stages :]]
  assert all(h <= o and w <= ow for (h, w), (o, ow) in zip(hd, original))
  if size == 192:
    assert hd == original
  assert len(expert.face_encoder_plan(size)) == 17 + 3 * prefix_stages
  assert len(disc.face_encoder_plan(size)) == 8 + prefix_stages
  assert all(layer.channels == 32 for block in encoder[1 : 1 + prefix_stages] for layer in block)


def test_decoder_output_padding_follows_the_skips():
  def paddings(size):
    decoder = generator.face_decoder_plan(size)
    return [block[0].output_padding for block in decoder if block[0].op == "convT"]

  # 96: the original's (0 for the stride-1 block, 1 for every stride-2 one).
  assert paddings(96) == [(0, 0)] + [(1, 1)] * 5
  assert paddings(192) == [(0, 0)] + [(1, 1)] * 6
  # 288: 3 -> 5 -> 9 are odd maps (no padding), then 18, 36, 72, 144, 288.
  assert paddings(288) == [(0, 0), (0, 0), (0, 0)] + [(1, 1)] * 5
  # 192x288: the rows stay 96 through the second prefix stage, so its mirror has stride (1, 2).
  plan = generator.face_decoder_plan((192, 288))
  assert [block[0].stride for block in plan[-2:]] == [(1, 2), (2, 2)]
  assert [block[-1].out_size for block in plan[-2:]] == [(96, 144), (192, 288)]


@pytest.mark.parametrize("size", [192, 288])
def test_transposed_conv_regex_finds_every_decoder_transposed_conv(size):
  params = abstract_variables("wav2lip", size, TINY)["params"]
  decoder = generator.face_decoder_plan(size)
  transposed = {layer.name for block in decoder for layer in block if layer.op == "convT"}
  assert {name for name in params if TRANSPOSED_CONV.fullmatch(name)} == transposed
  assert len(transposed) == 6 + (size // 96 - 1)
  # And the kernels have the transposed layout (kh, kw, out, in): out is the plan's channel count.
  for name in transposed:
    assert params[name]["conv"]["kernel"].shape[2] == params[name]["bn"]["scale"].shape[0]


@pytest.mark.parametrize("kind", KINDS)
def test_unsupported_size_names_the_size_and_the_supported_ones(kind):
  plans = {
    "syncnet": expert.face_encoder_plan,
    "wav2lip": generator.layer_plan,
    "disc": disc.face_encoder_plan,
  }
  with pytest.raises(ValueError, match=r"128x128.*supported sizes: 96, 192, 288, 192x288"):
    plans[kind](128)
  # The module checks before building anything (no shape error deep inside).
  with pytest.raises(ValueError, match=r"face size 160x160 .*supported sizes: 96, 192, 288"):
    abstract_variables(kind, 160, TINY)


@pytest.mark.parametrize("kind", KINDS)
def test_remat_has_the_same_variables_outputs_and_gradients(kind):
  # Compile time grows with the layer count, not the map size: the BN networks at 96 (the HD prefix layers
  # are the same ConvBN modules; the remat trees at 288 are compared below), the discriminator at 192.
  size = 192 if kind == "disc" else 96
  args = [jnp.asarray(x) for x in inputs(kind, 2, size, seed=1)]
  plain, remat = MODELS[kind](width_multiplier=TINY), MODELS[kind](width_multiplier=TINY, remat=True)
  variables = jax.jit(plain.init)(jax.random.key(0), *args)
  # Same tree (names, shapes) and the same initial values with remat.
  remat_init = jax.eval_shape(remat.init, jax.random.key(0), *args)
  assert jax.tree.structure(remat_init) == jax.tree.structure(variables)
  assert jax.tree.map(lambda x: x.shape, remat_init) == jax.tree.map(lambda x: x.shape, variables)
  assert jax.tree.structure(abstract_variables(kind, 288, TINY, remat=True)) == jax.tree.structure(
    abstract_variables(kind, 288, TINY)
  )

  def loss(model):
    def fn(params):
      if kind == "disc":
        out, updates = model.apply({"params": params}, *args, return_logits=True), {}
      else:
        out, updates = model.apply(
          {**variables, "params": params}, *args, train=True, mutable=["batch_stats"]
        )
      leaves = jax.tree.leaves(out)
      weights = [jnp.cos(jnp.arange(o.size, dtype=jnp.float32)).reshape(o.shape) for o in leaves]
      return sum(jnp.sum(o * w) for o, w in zip(leaves, weights)), (out, updates)

    return jax.jit(jax.value_and_grad(fn, has_aux=True))

  (value, aux), grads = loss(plain)(variables["params"])
  (value_r, aux_r), grads_r = loss(remat)(variables["params"])
  assert abs(float(value) - float(value_r)) <= 1e-6 * max(1.0, abs(float(value)))
  for a, b in zip(jax.tree.leaves((aux, grads)), jax.tree.leaves((aux_r, grads_r)), strict=True):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6, rtol=1e-6)
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) > 1e-3  # gradients are not all 0


@functools.cache
def generator_192():
  """(variables with non-trivial BN statistics, inputs, eval output) of the width-TINY 192 generator."""
  mel, faces = inputs("wav2lip", 2, 192, seed=2)
  variables = jax.jit(Wav2Lip(width_multiplier=TINY).init)(jax.random.key(0), mel, faces)
  rng = np.random.default_rng(3)
  stats = jax.tree.map(
    lambda x: jnp.asarray(rng.uniform(0.5, 2.0, x.shape).astype(np.float32)), variables["batch_stats"]
  )
  variables = {"params": variables["params"], "batch_stats": stats}
  out = jax.jit(Wav2Lip(width_multiplier=TINY).apply)(variables, mel, faces)
  return variables, (mel, faces), out


def test_generator_192_runs_and_folds_batch_norm():
  variables, (mel, faces), expected = generator_192()
  assert expected.shape == (2, 192, 192, 3)
  assert 0.0 <= float(expected.min()) and float(expected.max()) <= 1.0 and float(expected.std()) > 1e-3
  folded = fold_batch_norm("wav2lip", variables)
  assert "batch_stats" not in folded
  got = jax.jit(Wav2Lip(width_multiplier=TINY, fold_bn=True).apply)(folded, mel, faces)
  np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-5)


def test_generator_192_time_major_equals_flat():
  variables, (mel, faces), flat = generator_192()
  timed = jax.jit(Wav2Lip(width_multiplier=TINY).apply)(variables, mel[None], faces[None])
  assert timed.shape == (1, 2, 192, 192, 3)
  np.testing.assert_allclose(np.asarray(timed)[0], np.asarray(flat), atol=1e-6)


def test_example_inputs_at_hd():
  assert [x.shape for x in example_inputs("syncnet", 2, 192)] == [(2, 80, 16, 1), (2, 96, 192, 15)]
  assert [x.shape for x in example_inputs("wav2lip", 1, 288)] == [(1, 80, 16, 1), (1, 288, 288, 6)]
