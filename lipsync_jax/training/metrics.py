"""Train metrics on the host: one helper for buffering, the non-finite check, throughput and progress.

Owns `TrainMetrics`, which the loop feeds every step and asks to log at log steps:
  * buffering: the device metrics of the steps since the last fetch (at most log_every_steps of them; one
    `jax.device_get` per fetch, none per step), then the host rows since the last log;
  * the non-finite check (`NonFiniteLossError`, naming the step and the last saved checkpoint), run on
    every fetch, so nothing from a bad step on is ever saved;
  * throughput: steps/s and samples/s between log steps (the first, compiling step excluded) and the
    share of that wall time spent in `timed` sections (data, eval, checkpoint), one clock for all;
  * the chief's progress bar (tqdm: rate, ETA; one counter increment per step, no host sync; shown only on
    a terminal, with log lines printed above it).
Nothing here grows with the number of steps.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
import tqdm


class NonFiniteLossError(FloatingPointError):
  """A training metric became NaN/inf; raised before anything from that step on is saved."""


class _TqdmHandler(logging.Handler):
  """Writes another console handler's formatted records with tqdm.write (above the bar, not through it)."""

  def __init__(self, inner: logging.Handler):
    super().__init__(inner.level)
    self.inner = inner
    for log_filter in inner.filters:
      self.addFilter(log_filter)

  def emit(self, record: logging.LogRecord) -> None:
    try:
      tqdm.tqdm.write(self.inner.format(record), file=sys.stderr)
    except Exception:  # pylint: disable=broad-except
      self.handleError(record)


def _is_console(handler: logging.Handler) -> bool:
  if type(handler).__name__ == 'ABSLHandler':  # absl's handler (absl.logging), stderr
    return True
  return isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.stderr)


class TrainMetrics:
  """See the module docstring. Use as a context manager (closes the progress bar)."""

  def __init__(self, *, start_step: int, num_steps: int, global_batch: int, writer: Any, progress: bool):
    self._first_step = start_step + 1
    self._num_steps = num_steps
    self._global_batch = global_batch
    self._writer = writer
    self._progress = progress
    self._pending: list[tuple[int, Any]] = []  # (step, device metrics) not fetched yet
    self._rows: list[dict[str, float]] = []  # fetched host rows not logged yet
    self._sections: dict[str, float] = collections.defaultdict(float)
    self._log_t0, self._log_step0 = time.perf_counter(), start_step
    self._run_t0: float | None = None
    self._bar: tqdm.tqdm | None = None
    self._swapped: list[tuple[logging.Handler, logging.Handler]] = []
    self.last_means: dict[str, float] = {}

  # ------------------------------------------------------------------------------------- per step ----
  def add(self, step: int, metrics: Any) -> None:
    """Keeps a reference to this step's device metrics (no sync) and advances the progress bar."""
    self._pending.append((step, metrics))
    if step == self._first_step:
      jax.block_until_ready(metrics)  # compile time stays out of the rates and the ETA
      self._log_t0 = self._run_t0 = time.perf_counter()
      self._log_step0 = step
      self._sections.clear()
      self._open_bar(step)
    elif self._bar is not None:
      self._bar.update(1)

  @contextlib.contextmanager
  def timed(self, name: str) -> Iterator[None]:
    """Host wall time of a section (reported as timing/<name>: its share of the time between logs)."""
    start = time.perf_counter()
    try:
      yield
    finally:
      self._sections[name] += time.perf_counter() - start

  # ------------------------------------------------------------------------ fetch, check and log ----
  def fetch(self, last_saved_step: int | None) -> None:
    """Device metrics since the last fetch -> host rows; raises on the first non-finite value."""
    if not self._pending:
      return
    host = jax.device_get(self._pending)
    self._pending.clear()
    for step, metrics in host:
      row = {k: float(np.asarray(v)) for k, v in metrics.items()}
      bad = sorted(k for k, v in row.items() if not np.isfinite(v))
      if bad:
        raise NonFiniteLossError(
          f'Non-finite training metric(s) {bad} at step {step}: {row}. Nothing from step {step} on was '
          f'saved; the last good checkpoint is step {last_saved_step}. Lower config.optimizer.lr, set '
          'config.optimizer.grad_clip, or check the data, then rerun with the same --workdir to resume.'
        )
      self._rows.append(dict(row, step=step))

  def log(self, step: int, scalars: dict[str, float], last_saved_step: int | None) -> list[dict[str, float]]:
    """Fetches, writes the means since the last log + `scalars` + throughput as train/..., logs one line.

    Returns the per-step host rows since the last log ([{'step': s, metric: value}], for hooks)."""
    self.fetch(last_saved_step)
    rows, self._rows = self._rows, []
    now = time.perf_counter()
    elapsed, steps = now - self._log_t0, step - self._log_step0
    steps_per_sec = steps / max(elapsed, 1e-9) if steps > 0 else 0.0
    means = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != 'step'} if rows else {}
    out = {f'train/{k}': v for k, v in {**means, **scalars}.items()}
    out.update(
      {'train/steps_per_sec': steps_per_sec, 'train/samples_per_sec': steps_per_sec * self._global_batch}
    )
    if steps > 0:
      out.update({f'timing/{name}': seconds / max(elapsed, 1e-9) for name, seconds in self._sections.items()})
    self._writer.write_scalars(step, out)
    logging.info(
      'step %d/%d: %s | %.2f steps/s, %.1f samples/s',
      step,
      self._num_steps,
      ', '.join(f'{k}={v:.4f}' for k, v in sorted(means.items())),
      steps_per_sec,
      steps_per_sec * self._global_batch,
    )
    if self._bar is not None and 'loss' in means:
      self._bar.set_postfix(loss=f'{means["loss"]:.4f}', refresh=False)
    self._log_t0, self._log_step0 = now, step
    self._sections.clear()
    self.last_means = means
    return rows

  def steps_per_sec(self, step: int) -> float:
    """Over the whole run so far, the first (compiling) step excluded (0 if fewer than two steps ran)."""
    if self._run_t0 is None or step <= self._first_step:
      return 0.0
    return (step - self._first_step) / (time.perf_counter() - self._run_t0)

  # ------------------------------------------------------------------------------- progress bar ----
  def _open_bar(self, step: int) -> None:
    if not self._progress or not sys.stderr.isatty():
      return
    self._bar = tqdm.tqdm(
      total=self._num_steps, initial=step, unit='step', dynamic_ncols=True, file=sys.stderr, smoothing=0.1
    )
    root = logging.getLogger()
    for handler in list(root.handlers):  # log lines go above the bar while it is shown
      if _is_console(handler):
        wrapper = _TqdmHandler(handler)
        root.removeHandler(handler)
        root.addHandler(wrapper)
        self._swapped.append((handler, wrapper))

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None
    root = logging.getLogger()
    for handler, wrapper in self._swapped:
      root.removeHandler(wrapper)
      root.addHandler(handler)
    self._swapped.clear()

  def __enter__(self) -> TrainMetrics:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
