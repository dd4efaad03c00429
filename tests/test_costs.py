"""bench/costs.py: training FLOPs per sample from the real jitted train steps (tiny widths, CPU).

Most tests count the traced HLO (compiled=False: no XLA compile, seconds); one compiles, as
bench/device_check.py does."""

from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
import costs  # noqa: E402  (bench/ is not a package)

WIDTH = 1 / 32


def test_step_flops_positive_and_ordered_by_stage():
  expert, generator, gan = (
    costs.train_step_flops(stage, 96, WIDTH, batch=2, compiled=False) for stage in costs.STAGE_NAMES
  )
  assert expert > 0
  # A generator sample runs the generator on 5 frames and the frozen expert on them (forward + backward);
  # the GAN stage adds the discriminator on 5 generated + 5 real frames and its own backward pass.
  assert generator > 2 * expert
  assert gan > 1.2 * generator


def test_flops_grow_with_width_faster_than_linearly():
  # Conv FLOPs scale with in x out channels: doubling the width multiplies them by up to 4; at tiny widths
  # the first layers (fixed 15 / 1 input channels), BatchNorm and the loss keep the ratio lower.
  small = costs.train_step_flops("expert", 96, WIDTH, batch=2, compiled=False)
  ratio = costs.train_step_flops("expert", 96, 2 * WIDTH, batch=2, compiled=False) / small
  assert 2.2 < ratio <= 4.0


def test_per_sample_excludes_the_optimizer_update():
  per_sample = costs.train_flops_per_sample("expert", 96, WIDTH, compiled=False)
  fixed = costs.step_cost_slopes("expert", 96, WIDTH, compiled=False)["fixed_flops_per_step"]
  params = costs.param_counts(96, WIDTH)["expert"]
  assert per_sample > 0
  # Adam touches every parameter a few times per step, whatever the batch: counted once per step.
  assert fixed > params
  total = costs.train_step_flops("expert", 96, WIDTH, batch=4, compiled=False)
  assert total == pytest.approx(4 * per_sample + fixed, rel=1e-6)


def test_compiled_count_agrees_with_the_traced_one():
  # The compiled program (what bench/device_check.py counts for MFU) does the same work, give or take what
  # XLA simplifies; its scratch memory is reported too.
  compiled = costs.train_step_cost("expert", 96, WIDTH, batch=2)
  traced = costs.train_step_flops("expert", 96, WIDTH, batch=2, compiled=False)
  assert compiled["flops"] == pytest.approx(traced, rel=0.1)
  assert compiled["temp_bytes"] > 0


def test_img_size_without_a_network_is_named():
  # The networks are defined for 96, 192 and 288 px faces; other sizes fail naming the size and the fix.
  with pytest.raises(ValueError, match="img_size=160.*96, 192, 288"):
    costs.train_flops_per_sample("generator", 160, WIDTH, compiled=False)


def test_allreduce_bytes_ring_factor():
  assert costs.allreduce_bytes_per_chip(1000, 1) == 0.0
  assert costs.allreduce_bytes_per_chip(1000, 2) == pytest.approx(4000.0)
  assert costs.allreduce_bytes_per_chip(1000, 64) == pytest.approx(2 * 63 / 64 * 4000.0)
