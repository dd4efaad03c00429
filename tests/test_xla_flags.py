"""Tests for lipsync_jax.xla_flags: default XLA:CPU flags are appended, never override, can be turned off."""

from lipsync_jax import xla_flags

FLAG = next(iter(xla_flags.DEFAULT_CPU_FLAGS))
TESTED = xla_flags.TESTED_JAXLIB[0]


def test_appends_missing_flags_after_the_users_own():
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  added = xla_flags.apply_default_xla_flags(env, jaxlib_version=TESTED)
  assert added == [f'--{FLAG}={xla_flags.DEFAULT_CPU_FLAGS[FLAG]}']
  assert env['XLA_FLAGS'].split() == ['--xla_force_host_platform_device_count=8', *added]
  assert xla_flags.apply_default_xla_flags(env, jaxlib_version=TESTED) == []  # idempotent


def test_user_setting_wins_and_opt_out_and_untested_jaxlib():
  env = {'XLA_FLAGS': f'--{FLAG}=individual_dot'}
  assert xla_flags.apply_default_xla_flags(env, jaxlib_version=TESTED) == []
  assert env['XLA_FLAGS'] == f'--{FLAG}=individual_dot'
  env = {xla_flags.OPT_OUT_ENV: 'off'}
  assert xla_flags.apply_default_xla_flags(env, jaxlib_version=TESTED) == [] and 'XLA_FLAGS' not in env
  env = {}
  assert xla_flags.apply_default_xla_flags(env, jaxlib_version='0.0.1') == [] and 'XLA_FLAGS' not in env


def test_this_session_runs_with_the_defaults():
  import os  # pylint: disable=import-outside-toplevel

  if xla_flags._jaxlib_version() in xla_flags.TESTED_JAXLIB:  # pylint: disable=protected-access
    assert f'--{FLAG}=' in os.environ.get('XLA_FLAGS', '')
    assert '--xla_force_host_platform_device_count=8' in os.environ['XLA_FLAGS']  # conftest's kept
