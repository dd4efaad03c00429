"""Tests for lipsync_jax.export + lipsync_jax.serving: exported artifact == direct model apply."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from lipsync_jax import export as export_cli
from lipsync_jax.inference import export, serving

WIDTH = 1 / 16


def _variables(kind):
  from lipsync_jax.models import MODELS, example_inputs

  variables = MODELS[kind](width_multiplier=WIDTH).init(jax.random.key(1), *example_inputs(kind, 1, 96))
  variables = jax.tree.map(np.asarray, variables)
  # Non-trivial running statistics so BN folding is exercised.
  rng = np.random.default_rng(0)
  stats = jax.tree.map(
    lambda x: (rng.uniform(0.5, 1.5, x.shape) if x.min() == 1 else rng.normal(0, 0.1, x.shape)).astype(
      np.float32
    ),
    variables["batch_stats"],
  )
  return {"params": variables["params"], "batch_stats": stats}


def test_exported_generator_equals_direct_apply_for_any_batch(tmp_path):
  from lipsync_jax.models import Wav2Lip

  variables = _variables("wav2lip")
  meta = {"width_multiplier": WIDTH, "img_size": 96}
  out = os.path.join(tmp_path, "gen")
  export.export_model(variables, meta, out, "wav2lip", batch="symbolic")
  written = json.load(open(os.path.join(out, export.META_FILE)))
  assert written["batch"] == "symbolic" and written["bn_folded"]
  served = serving.load(out)
  assert served.img_size == 96
  rng = np.random.default_rng(1)
  for batch in (1, 3):
    mel = rng.normal(size=(batch, 80, 16, 1)).astype(np.float32)
    faces = rng.uniform(size=(batch, 96, 96, 6)).astype(np.float32)
    want = Wav2Lip(width_multiplier=WIDTH).apply(variables, mel, faces, train=False)
    got = served(mel[..., 0], faces)
    assert got.shape == (batch, 96, 96, 3)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5)


def test_exported_expert_fixed_batch(tmp_path):
  from lipsync_jax.models import SyncNet

  variables = _variables("syncnet")
  out = os.path.join(tmp_path, "expert")
  export.export_model(variables, {"width_multiplier": WIDTH, "img_size": 96}, out, "syncnet", batch=2)
  served = serving.load(out)
  rng = np.random.default_rng(2)
  mel = rng.normal(size=(2, 80, 16, 1)).astype(np.float32)
  faces = rng.uniform(size=(2, 48, 96, 15)).astype(np.float32)
  want_a, want_f = SyncNet(width_multiplier=WIDTH).apply(variables, mel, faces, train=False)
  got_a, got_f = served(mel, faces)
  np.testing.assert_allclose(np.asarray(got_a), np.asarray(want_a), atol=2e-5)
  np.testing.assert_allclose(np.asarray(got_f), np.asarray(want_f), atol=2e-5)
  with pytest.raises((ValueError, TypeError)):
    served(mel[:1], faces[:1])  # fixed batch 2


def test_artifact_has_no_pickles_and_clear_errors(tmp_path):
  out = os.path.join(tmp_path, "gen")
  export.export_model(_variables("wav2lip"), {"width_multiplier": WIDTH}, out, "wav2lip")
  with np.load(os.path.join(out, export.PARAMS_FILE), allow_pickle=False) as data:
    assert all(data[k].dtype == np.float32 for k in data.files)
  os.remove(os.path.join(out, export.META_FILE))
  with pytest.raises(ValueError, match="export_meta.json"):
    serving.load(out)


def test_artifact_transposed_conv_form_follows_its_target_platforms():
  assert export.transpose_impl_for(("cpu",)) == "phase"
  assert export.transpose_impl_for(export.DEFAULT_PLATFORMS) == "direct"
  assert export.transpose_impl_for(("cuda",)) == "direct"


def test_cli_loads_with_weights_and_fails_with_one_line(tmp_path, capsys):
  from lipsync_jax import weights

  variables = _variables("syncnet")
  source = weights.save_variables(os.path.join(tmp_path, "expert"), variables, "syncnet")
  out = os.path.join(tmp_path, "art")
  assert (
    export_cli.main(
      ["--checkpoint", source, "--kind", "syncnet", "--out", out, "--batch", "2", "--platforms", "cpu"]
    )
    == 0
  )
  assert "exported syncnet" in capsys.readouterr().out
  served = serving.load(out)
  assert served.meta["width_multiplier"] == WIDTH and set(served.params) == set(variables["params"])
  assert export_cli.main(["--checkpoint", source, "--kind", "wav2lip", "--out", out]) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error:") and "'syncnet' model" in err[0]
  assert (
    export.params_from_npz_dict(export.params_to_npz_dict(variables["params"])).keys()
    == variables["params"].keys()
  )


def test_export_to_and_serve_from_gcs(gcs_dir, tmp_path):
  """The artifact directory on gs:// (the emulator): written there, loaded back, the same outputs as a local
  export; a gs:// directory that is no artifact is named in the error."""
  variables = _variables("syncnet")
  meta = {"width_multiplier": WIDTH, "img_size": 96}
  export.export_model(variables, meta, f"{gcs_dir}/expert", "syncnet", batch=2, platforms=["cpu"])
  export.export_model(variables, meta, str(tmp_path / "expert"), "syncnet", batch=2, platforms=["cpu"])
  remote, local = serving.load(f"{gcs_dir}/expert"), serving.load(str(tmp_path / "expert"))
  rng = np.random.default_rng(2)
  mel = rng.normal(size=(2, 80, 16, 1)).astype(np.float32)
  faces = rng.uniform(size=(2, 48, 96, 15)).astype(np.float32)
  for got, want in zip(remote(mel, faces), local(mel, faces)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  with pytest.raises(ValueError, match=rf"{gcs_dir}/nothing: not a lipsync_jax export"):
    serving.load(f"{gcs_dir}/nothing")
