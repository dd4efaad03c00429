"""Tests for the official .pth mapping (lipsync_jax.weights: loading, exact round trips, clear errors) and
the convert CLI (variables directories, one-line errors)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
import torch_reference as tr  # tests/ is on sys.path under pytest (rootdir conftest)

from lipsync_jax import convert, weights
from lipsync_jax.models import MODELS, example_inputs
from lipsync_jax.weights import CheckpointError


@pytest.fixture(scope="module")
def syncnet_ref():
  return tr.randomize(tr.SyncNetColor(), seed=5)


@pytest.fixture(scope="module")
def disc_ref():
  return tr.randomize(tr.QualityDiscRef(), seed=6)


def assert_trees_equal(a, b):
  flat_a, flat_b = weights.flatten(a), weights.flatten(b)
  assert flat_a.keys() == flat_b.keys()
  for key in flat_a:
    np.testing.assert_array_equal(np.asarray(flat_a[key]), np.asarray(flat_b[key]), err_msg=str(key))


def test_wrapped_prefixed_and_bare_files_load_the_same(syncnet_ref, tmp_path):
  tr.save_official(syncnet_ref, tmp_path / "official.pth")
  tr.save_official(syncnet_ref, tmp_path / "bare.pth", wrapped=False, data_parallel=False)
  official = weights.load(tmp_path / "official.pth", "syncnet")[0]
  bare = weights.load(tmp_path / "bare.pth", "syncnet")[0]
  assert_trees_equal(official, bare)
  assert set(official) == {"params", "batch_stats"}
  np.testing.assert_array_equal(
    official["batch_stats"]["face_encoder_3"]["bn"]["var"],
    syncnet_ref.face_encoder[3].conv_block[1].running_var.numpy(),
  )
  torch_kernel = syncnet_ref.audio_encoder[0].conv_block[0].weight.detach().numpy()
  np.testing.assert_array_equal(
    official["params"]["audio_encoder_0"]["conv"]["kernel"], torch_kernel.transpose(2, 3, 1, 0)
  )


@pytest.mark.parametrize("kind", ["syncnet", "wav2lip", "disc"])
def test_round_trip_is_exact_and_loads_into_pytorch(kind):
  model = tr.randomize(tr.REFERENCES[kind](), seed=7)
  variables = weights.torch_state_dict_to_variables(kind, model.state_dict())
  state = weights.variables_to_torch_state_dict(kind, variables)
  reference = model.state_dict()
  assert set(state) == set(reference)
  for key, value in reference.items():
    if not key.endswith("num_batches_tracked"):
      np.testing.assert_array_equal(state[key], value.numpy(), err_msg=key)
  assert_trees_equal(weights.torch_state_dict_to_variables(kind, state), variables)
  fresh = tr.REFERENCES[kind]()
  fresh.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, strict=True)


def test_width_multiplier_is_inferred_for_small_models(tmp_path):
  variables = jax.jit(MODELS["wav2lip"](width_multiplier=0.25).init)(
    jax.random.key(0), *example_inputs("wav2lip")
  )
  path = tmp_path / "small.pth"
  convert.save_torch_checkpoint(path, "wav2lip", variables)
  loaded = weights.load(path, "wav2lip")[0]
  assert_trees_equal(loaded, jax.tree.map(np.asarray, variables))


def _write_state(path, state, wrapped=True):
  torch.save({"state_dict": state} if wrapped else state, path)


def test_errors_name_the_file_and_key(syncnet_ref, disc_ref, tmp_path):
  good = {"module." + k: v for k, v in syncnet_ref.state_dict().items()}
  path = tmp_path / "expert.pth"
  _write_state(path, good)

  with pytest.raises(CheckpointError, match=r"'syncnet' checkpoint.*not 'wav2lip'"):
    weights.load(path, "wav2lip")
  with pytest.raises(CheckpointError, match="unknown model kind"):
    weights.load(path, "vgg")

  missing = dict(good)
  del missing["module.audio_encoder.4.conv_block.1.running_mean"]
  _write_state(path, missing)
  with pytest.raises(
    CheckpointError,
    match=r"expert\.pth.*missing key 'audio_encoder\.4\.conv_block\.1\."
    r"running_mean'",
  ):
    weights.load(path, "syncnet")

  extra = dict(good, **{"module.face_encoder.99.conv_block.0.weight": torch.zeros(1)})
  _write_state(path, extra)
  with pytest.raises(CheckpointError, match=r"unexpected key 'face_encoder\.99\.conv_block\.0\.weight'"):
    weights.load(path, "syncnet")

  wrong_shape = dict(good)
  wrong_shape["module.face_encoder.5.conv_block.1.weight"] = torch.zeros(7)
  _write_state(path, wrong_shape)
  with pytest.raises(
    CheckpointError,
    match=r"'face_encoder\.5\.conv_block\.1\.weight' has shape \(7,\), "
    r"expected \(128,\)",
  ):
    weights.load(path, "syncnet")

  wrong_kernel = dict(good)
  wrong_kernel["module.face_encoder.1.conv_block.0.weight"] = torch.zeros(64, 32, 3, 3)
  _write_state(path, wrong_kernel)
  with pytest.raises(
    CheckpointError,
    match=r"face_encoder\.1\.conv_block\.0\.weight' has shape "
    r"\(64, 32, 3, 3\), expected \(64, 32, 5, 5\)",
  ):
    weights.load(path, "syncnet")

  disc_path = tmp_path / "disc.pth"
  tr.save_official(disc_ref, disc_path)
  with pytest.raises(CheckpointError, match="'disc' checkpoint"):
    weights.load(disc_path, "syncnet")


def test_truncated_garbage_and_unsafe_files_raise_one_clear_error(disc_ref, tmp_path):
  good = tmp_path / "good.pth"
  tr.save_official(disc_ref, good)
  data = good.read_bytes()
  truncated = tmp_path / "truncated.pth"
  truncated.write_bytes(data[: len(data) // 2])
  garbage = tmp_path / "garbage.pth"
  garbage.write_bytes(os.urandom(4096))
  unsafe = tmp_path / "unsafe.pth"
  unsafe.write_bytes(pickle.dumps(os.system))  # weights_only=True must refuse to resolve this global
  empty = tmp_path / "empty.pth"
  torch.save({}, empty)
  for path in (truncated, garbage, unsafe, empty, tmp_path / "absent.pth"):
    with pytest.raises(CheckpointError, match=str(path.name)):
      weights.load(path, "disc")


def test_save_and_load_variables(syncnet_ref, tmp_path):
  variables = weights.torch_state_dict_to_variables("syncnet", syncnet_ref.state_dict())
  weights.save_variables(tmp_path / "expert", variables, "syncnet", meta={"source": "test"})
  restored, meta = weights.load_variables(tmp_path / "expert")
  assert_trees_equal(restored, variables)
  assert meta == {"kind": "syncnet", "width_multiplier": 1.0, "img_size": 96, "source": "test"}
  with pytest.raises(CheckpointError, match="already exists"):
    weights.save_variables(tmp_path / "expert", variables, "syncnet")
  with pytest.raises(CheckpointError, match="not a lipsync_jax variables directory"):
    weights.load_variables(tmp_path / "nothing")


def _run_cli(*args):
  return subprocess.run(
    [sys.executable, "-m", "lipsync_jax.convert", *args],
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )


def test_cli_converts_and_fails_with_one_line(disc_ref, tmp_path):
  src = tmp_path / "visual_quality_disc.pth"
  tr.save_official(disc_ref, src)
  ok = _run_cli("--kind", "disc", "--src", str(src), "--dst", str(tmp_path / "out"))
  assert ok.returncode == 0, ok.stderr
  assert "14,113,793 parameters" in ok.stdout
  variables, meta = weights.load_variables(tmp_path / "out")
  assert meta["kind"] == "disc" and meta["source"] == str(src)
  np.testing.assert_array_equal(
    variables["params"]["binary_pred_0"]["kernel"][0, 0, :, 0],
    disc_ref.binary_pred[0].weight.detach().numpy()[0, :, 0, 0],
  )

  garbage = tmp_path / "garbage.pth"
  garbage.write_bytes(b"not a checkpoint")
  unsafe = tmp_path / "unsafe.pth"
  unsafe.write_bytes(pickle.dumps(os.system))  # torch also warns about its pickle protocol: must not leak
  for bad in (garbage, unsafe):
    failed = _run_cli("--kind", "disc", "--src", str(bad), "--dst", str(tmp_path / "out2"))
    assert failed.returncode != 0
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and bad.name in lines[0] and "weights_only" not in lines[0], failed.stderr
    assert not (tmp_path / "out2").exists()


def test_cli_converts_from_and_to_gcs(disc_ref, tmp_path, gcs_dir):
  """--src and --dst on gs:// (the emulator; the subprocess inherits its variables)."""
  from lipsync_jax import fs

  src = tmp_path / "visual_quality_disc.pth"
  tr.save_official(disc_ref, src)
  fs.copy(src, f"{gcs_dir}/disc.pth")
  ok = _run_cli("--kind", "disc", "--src", f"{gcs_dir}/disc.pth", "--dst", f"{gcs_dir}/out")
  assert ok.returncode == 0, ok.stderr
  variables, meta = weights.load_variables(f"{gcs_dir}/out")
  assert meta["kind"] == "disc" and meta["source"] == f"{gcs_dir}/disc.pth"
  np.testing.assert_array_equal(
    variables["params"]["binary_pred_0"]["kernel"][0, 0, :, 0],
    disc_ref.binary_pred[0].weight.detach().numpy()[0, :, 0, 0],
  )
  missing = _run_cli("--kind", "disc", "--src", f"{gcs_dir}/absent.pth", "--dst", f"{gcs_dir}/out2")
  assert missing.returncode != 0 and f"--src {gcs_dir}/absent.pth: no such file" in missing.stderr
