"""Entry point of training. Owns the flags, the logging set-up (lipsync_jax.logs, by absl's --verbosity:
quiet by default, --verbosity=1 for every library's INFO), jax.distributed set-up, then
lipsync_jax.training.loop.train_and_evaluate. Nothing else.

  python -m lipsync_jax.main --config=configs/gan.py:tiny --workdir=/tmp/gan_tiny
  python -m lipsync_jax.main --config=configs/gan.py --workdir=gs://bucket/run \
      --config.expert_checkpoint=gs://bucket/expert --config.data.shards_dir=gs://bucket/lrs2_shards

Multi-process: on Cloud TPU pods and SLURM, jax.distributed.initialize() finds its peers from the
environment (run the same command on every host/task). Elsewhere give --coordinator_address,
--num_processes and --process_id (or the JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID
environment variables). On CPU, multi-process collectives use gloo.
"""

from __future__ import annotations

import logging
import os

from absl import app, flags
from ml_collections import config_flags

from lipsync_jax import logs

_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, TensorBoard logs and config.')
_CONFIG = config_flags.DEFINE_config_file(
  'config', None, 'Training config file, e.g. configs/gan.py or configs/gan.py:tiny.', lock_config=True
)
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (multi-process).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Total number of processes (multi-process).')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process\'s index (multi-process).')
_PLATFORM = flags.DEFINE_string('platform', None, 'Force a JAX platform (cpu, gpu, tpu); default: best.')
flags.mark_flags_as_required(['config', 'workdir'])
log = logging.getLogger('lipsync_jax.main')

# Environment variables that mean "launched as one of several processes" (cluster auto-detection).
_CLUSTER_ENV = (
  'SLURM_JOB_ID',
  'TPU_WORKER_HOSTNAMES',
  'MEGASCALE_COORDINATOR_ADDRESS',
  'OMPI_COMM_WORLD_SIZE',
  'JAX_COORDINATOR_ADDRESS',
)


def _explicit_process_flags() -> dict:
  """coordinator_address / num_processes / process_id from flags, else JAX_* environment variables."""
  env = os.environ
  address = _COORDINATOR.value or env.get('JAX_COORDINATOR_ADDRESS')
  num = _NUM_PROCESSES.value if _NUM_PROCESSES.value is not None else env.get('JAX_NUM_PROCESSES')
  pid = _PROCESS_ID.value if _PROCESS_ID.value is not None else env.get('JAX_PROCESS_ID')
  if not address or num is None or pid is None:
    return {}
  return dict(coordinator_address=address, num_processes=int(num), process_id=int(pid))


def _multi_process_requested() -> bool:
  if _explicit_process_flags() or (_NUM_PROCESSES.value or 1) > 1:
    return True
  if os.environ.get('SLURM_JOB_ID') and int(os.environ.get('SLURM_NTASKS', '1')) <= 1:
    return False  # a single-task SLURM job is one process
  return any(os.environ.get(k) for k in _CLUSTER_ENV)


def initialize_distributed() -> None:
  """jax.distributed.initialize() from flags, or from the cluster environment (TPU pod, SLURM, MPI)."""
  import jax  # pylint: disable=g-import-not-at-top

  if _PLATFORM.value:
    jax.config.update('jax_platforms', _PLATFORM.value)
  if not _multi_process_requested():
    return
  platform = _PLATFORM.value or os.environ.get('JAX_PLATFORMS', '')
  if platform.startswith('cpu'):
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(**_explicit_process_flags())  # {} -> cluster auto-detection
  log.info(
    'jax.distributed: process %d of %d, %d local / %d global devices',
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logs.setup(flags.FLAGS.verbosity)
  initialize_distributed()
  import jax  # pylint: disable=import-outside-toplevel  (after --platform is applied)

  from lipsync_jax.training import loop  # pylint: disable=import-outside-toplevel

  if jax.process_index() != 0:
    logging.getLogger().setLevel(logging.WARNING)  # one process reports; the others only warn
  log.info(
    'JAX %s: %d %s device(s), %d process(es)',
    jax.__version__,
    jax.device_count(),
    jax.devices()[0].platform,
    jax.process_count(),
  )
  result = loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  log.info(
    'Done at step %d%s.',
    result.step,
    ' (preempted; rerun the same command to resume)' if result.preempted else '',
  )


if __name__ == '__main__':
  app.run(main)
