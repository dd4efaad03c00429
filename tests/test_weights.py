"""Tests for lipsync_jax.weights: every source kind, the wrong kind, missing paths; lipsync_jax.fs basics."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest
import torch
import torch_reference as tr  # tests/ is on sys.path under pytest (rootdir conftest)

from lipsync_jax import fs, weights
from lipsync_jax.models import MODELS, example_inputs
from lipsync_jax.weights import CheckpointError

WIDTH = 1 / 16


def _init(kind, width=WIDTH):
  variables = MODELS[kind](width_multiplier=width).init(jax.random.key(0), *example_inputs(kind, 1, 96))
  return jax.tree.map(np.asarray, variables)


def _assert_trees_equal(a, b):
  flat_a, flat_b = weights.flatten(a), weights.flatten(b)
  assert flat_a.keys() == flat_b.keys()
  for key in flat_a:
    np.testing.assert_array_equal(np.asarray(flat_a[key]), np.asarray(flat_b[key]), err_msg=str(key))


def _generator_workdir(path, variables):
  import flax.struct
  import jax.numpy as jnp

  from lipsync_jax.training import checkpointing

  class State(flax.struct.PyTreeNode):
    step: jnp.ndarray
    params: dict
    batch_stats: dict

  state = State(step=jnp.asarray(7), params=variables["params"], batch_stats=variables["batch_stats"])
  with checkpointing.make_manager(path, async_save=False) as manager:
    checkpointing.save(
      manager, 7, state, None, {"stage": "generator", "width_multiplier": WIDTH, "img_size": 96}
    )
    manager.wait_until_finished()
  return os.fspath(path)


def test_official_pth_source(tmp_path):
  model = tr.randomize(tr.SyncNetColor(), seed=5)
  path = tmp_path / "lipsync_expert.pth"
  tr.save_official(model, path)  # {'state_dict': {'module.' + k: v}}
  variables, meta = weights.load(path, "syncnet")
  assert meta == {"kind": "syncnet", "width_multiplier": 1.0, "img_size": 96, "source": str(path)}
  _assert_trees_equal(variables, weights.torch_state_dict_to_variables("syncnet", model.state_dict()))


def test_variables_dir_source(tmp_path):
  variables = _init("wav2lip")
  directory = weights.save_variables(tmp_path / "vars", variables, "wav2lip", meta={"source": "x.pth"})
  loaded, meta = weights.load(directory, "wav2lip")
  _assert_trees_equal(loaded, variables)
  assert meta["kind"] == "wav2lip" and meta["width_multiplier"] == WIDTH and meta["img_size"] == 96
  assert meta["source"] == directory and meta["converted_from"] == "x.pth"


def test_training_workdir_source(tmp_path):
  variables = _init("wav2lip")
  workdir = _generator_workdir(tmp_path / "wd", variables)
  loaded, meta = weights.load(workdir, "wav2lip")
  _assert_trees_equal(loaded, variables)
  assert meta["kind"] == "wav2lip" and meta["step"] == 7 and meta["width_multiplier"] == WIDTH
  assert meta["source"] == workdir


def test_syncnet_v2_source(tmp_path):
  from syncnet_v2_reference import SyncNetV2Torch

  path = tmp_path / "syncnet_v2.model"
  torch.save(SyncNetV2Torch(width=WIDTH).state_dict(), path)  # a bare state_dict, as the public file
  variables, meta = weights.load(path, "syncnet_v2")
  assert meta["kind"] == "syncnet_v2" and meta["width_multiplier"] == pytest.approx(WIDTH)
  assert set(variables) == {"params", "batch_stats"}
  with pytest.raises(CheckpointError, match=r"syncnet_v2\.model.*'syncnet_v2' checkpoint.*not 'syncnet'"):
    weights.load(path, "syncnet")


def test_wrong_kind_names_the_path_and_the_fix(tmp_path):
  pth = tmp_path / "disc.pth"
  tr.save_official(tr.randomize(tr.QualityDiscRef(), seed=6), pth)
  with pytest.raises(CheckpointError, match=r"disc\.pth: this is a 'disc' checkpoint.*pass --kind disc"):
    weights.load(pth, "wav2lip")
  directory = weights.save_variables(tmp_path / "vars", _init("syncnet"), "syncnet")
  with pytest.raises(CheckpointError, match=r"vars holds a 'syncnet' model; a 'wav2lip' model is needed"):
    weights.load(directory, "wav2lip")
  workdir = _generator_workdir(tmp_path / "wd", _init("wav2lip"))
  with pytest.raises(CheckpointError, match=r"wd holds a 'generator'-stage checkpoint.*expert"):
    weights.load(workdir, "syncnet")
  with pytest.raises(CheckpointError, match=r"wd: a training workdir holds no 'syncnet_v2' model"):
    weights.load(workdir, "syncnet_v2")
  with pytest.raises(CheckpointError, match="unknown model kind 'vgg'"):
    weights.load(pth, "vgg")


def test_missing_and_unusable_paths(tmp_path):
  absent = tmp_path / "absent.pth"
  with pytest.raises(CheckpointError, match=r"absent\.pth: does not exist; pass an official PyTorch \.pth"):
    weights.load(absent, "wav2lip")
  empty = tmp_path / "empty_dir"
  empty.mkdir()
  with pytest.raises(CheckpointError, match=r"empty_dir: a directory with neither lipsync_jax_meta\.json"):
    weights.load(empty, "wav2lip")
  garbage = tmp_path / "garbage.pth"
  garbage.write_bytes(b"not torch")
  with pytest.raises(CheckpointError, match=r"garbage\.pth: not a readable PyTorch checkpoint"):
    weights.load(garbage, "wav2lip")


def test_flatten_unflatten_and_infer_width():
  tree = {"params": {"a": {"kernel": np.zeros((3, 3, 1, 4))}, "b": np.ones(2)}, "batch_stats": {}}
  flat = weights.flatten(tree)
  assert set(flat) == {("params", "a", "kernel"), ("params", "b")}
  assert weights.unflatten(flat) == {
    "params": {"a": {"kernel": flat[("params", "a", "kernel")]}, "b": flat[("params", "b")]}
  }
  for kind in ("wav2lip", "syncnet", "disc"):
    assert weights.infer_width(kind, _init(kind, 1 / 8)) == 1 / 8
  with pytest.raises(CheckpointError, match="not a 'syncnet' model"):
    weights.infer_width("syncnet", _init("wav2lip"))


def test_fs_local_paths(tmp_path):
  fs.makedirs(tmp_path / "a" / "b")
  with fs.open(tmp_path / "a" / "b" / "x.txt", "w") as f:
    f.write("hi")
  assert fs.isdir(tmp_path / "a") and fs.isfile(tmp_path / "a" / "b" / "x.txt")
  assert fs.listdir(tmp_path / "a") == ["b"]
  assert fs.glob(os.path.join(tmp_path, "**", "*.txt")) == [os.path.join(tmp_path, "a", "b", "x.txt")]
  assert fs.absolute("rel/x") == os.path.abspath("rel/x") and fs.absolute("gs://b/x") == "gs://b/x"
  with fs.local_copy(tmp_path / "a" / "b" / "x.txt") as local:
    assert open(local).read() == "hi"


def test_reading_pth_without_torch_names_the_optional_extra(tmp_path, monkeypatch):
  """torch is an optional extra (`pip install -e .[torch]`): without it, a .pth gets that instruction."""
  path = tmp_path / "wav2lip.pth"
  torch.save({"x": torch.zeros(1)}, path)
  monkeypatch.setitem(__import__("sys").modules, "torch", None)  # `import torch` now raises ImportError
  with pytest.raises(CheckpointError, match=r"needs torch, an optional extra: pip install -e '\.\[torch\]'"):
    weights.read_torch_state_dict(path)


def test_every_source_from_gcs(gcs_dir, tmp_path):
  """gs:// sources (the emulator): an official .pth, a variables directory, a training workdir, s3fd.pth;
  a missing gs:// path is named like a local one."""
  model = tr.randomize(tr.SyncNetColor(), seed=5)
  local_pth = tmp_path / "lipsync_expert.pth"
  tr.save_official(model, local_pth)
  fs.copy(local_pth, f"{gcs_dir}/lipsync_expert.pth")
  variables, meta = weights.load(f"{gcs_dir}/lipsync_expert.pth", "syncnet")
  assert meta["source"] == f"{gcs_dir}/lipsync_expert.pth" and meta["width_multiplier"] == 1.0
  _assert_trees_equal(variables, weights.torch_state_dict_to_variables("syncnet", model.state_dict()))

  generator = _init("wav2lip")
  directory = weights.save_variables(f"{gcs_dir}/vars", generator, "wav2lip")
  assert directory == f"{gcs_dir}/vars" and fs.isfile(f"{gcs_dir}/vars/{weights.META_FILE}")
  loaded, meta = weights.load(directory, "wav2lip")
  _assert_trees_equal(loaded, generator)
  assert meta["width_multiplier"] == WIDTH and weights.source_type(directory) == "variables"

  workdir = _generator_workdir(f"{gcs_dir}/wd", generator)
  loaded, meta = weights.load(workdir, "wav2lip")
  _assert_trees_equal(loaded, generator)
  assert meta["step"] == 7 and meta["source"] == workdir

  from lipsync_jax.media import s3fd

  state = {k: torch.from_numpy(v) for k, v in _s3fd_state().items()}
  torch.save(state, tmp_path / "s3fd.pth")
  fs.copy(tmp_path / "s3fd.pth", f"{gcs_dir}/s3fd.pth")
  _assert_trees_equal(s3fd.load_s3fd(f"{gcs_dir}/s3fd.pth"), s3fd.load_s3fd(tmp_path / "s3fd.pth"))

  with pytest.raises(CheckpointError, match=rf"{gcs_dir}/absent\.pth: does not exist; pass an official"):
    weights.load(f"{gcs_dir}/absent.pth", "wav2lip")
  with pytest.raises(CheckpointError, match=rf"{gcs_dir}/absent\.pth: no such checkpoint file"):
    s3fd.load_s3fd(f"{gcs_dir}/absent.pth")


def _s3fd_state():
  from lipsync_jax.media import s3fd

  rng = np.random.default_rng(0)
  return {k: rng.standard_normal(shape).astype(np.float32) for k, shape in s3fd.param_shapes().items()}
