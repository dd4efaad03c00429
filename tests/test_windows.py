"""Time/space layout facts: mel window index, lower half, masking, channel stacking."""

import jax.numpy as jnp
import numpy as np

from lipsync_jax import windows


def test_mel_window_start_matches_original_formula():
  # int(80 * f / 25): 0, 3, 6, 9, 12, 16, ...
  assert [windows.mel_window_start(f) for f in range(6)] == [0, 3, 6, 9, 12, 16]
  mel = np.arange(80 * 40, dtype=np.float32).reshape(80, 40)
  win = windows.mel_window(mel, 5)
  assert win.shape == (80, 16) and win[0, 0] == 16
  assert windows.mel_window(mel, 8) is None  # 25 + 16 > 40


def test_lower_half_and_mask_numpy_and_jax():
  faces = np.ones((2, 96, 96, 3), np.float32)
  assert windows.lower_half(faces).shape == (2, 48, 96, 3)
  for masked in (windows.mask_lower_half(faces), np.asarray(windows.mask_lower_half(jnp.asarray(faces)))):
    assert masked[:, :48].min() == 1 and masked[:, 48:].max() == 0
  assert faces[:, 48:].min() == 1  # the input is not modified


def test_stack_on_channels_time_order():
  frames = np.zeros((2, 5, 4, 6, 3), np.float32)
  for t in range(5):
    frames[:, t] = t
  stacked = windows.stack_on_channels(frames)
  assert stacked.shape == (2, 4, 6, 15)
  np.testing.assert_array_equal(stacked[0, 0, 0], np.repeat(np.arange(5), 3))
