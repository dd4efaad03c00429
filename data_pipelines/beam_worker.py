"""The Beam SDK worker process of local multi-process preprocessing runs: Beam's own worker entry point
(apache_beam.runners.worker.sdk_worker_main), started by the runner as `python -m data_pipelines.beam_worker`
(data_pipelines.preprocess builds that environment), with quiet logging.

Owns the worker's stderr: Beam's entry point prints its start-up and per-bundle INFO lines there (the
'apitools not found' warning Beam logs on import installs a root handler on the inherited stderr), about 15
lines per worker per run. Here a root handler that shows ERROR only is installed before Beam is imported
(the package's import already drops the apitools warning), so a failing worker still says why; the rest
goes to the runner over the Fn API logging channel at the pipeline's --default_sdk_harness_log_level, which
data_pipelines.preprocess sets from its --verbosity.
"""

from __future__ import annotations

import logging
import sys


def main() -> None:
  handler = logging.StreamHandler(sys.stderr)
  handler.setLevel(logging.ERROR)
  handler.setFormatter(logging.Formatter("beam worker: %(levelname)s %(name)s: %(message)s"))
  logging.getLogger().addHandler(handler)
  # Imported only now: Beam's import logs on the root logger, which must have its handler first.
  from apache_beam.runners.worker import sdk_worker_main

  sdk_worker_main.main(sys.argv)


if __name__ == "__main__":
  main()
