"""Offline data jobs built on lipsync_jax (never imported by it): the Apache Beam preprocessing job
(`preprocess`, with its quiet worker entry point `beam_worker`) and the synthetic demo corpus CLI
(`synthetic`).

Importing the package applies lipsync_jax.logs' quiet defaults (verbosity 0; a job's main() then applies
the --verbosity it was given) before any job module imports Apache Beam, whose import logs a
non-actionable 'apitools not found' warning on the root logger.
"""

from lipsync_jax import logs as _logs

_logs.setup(0)
