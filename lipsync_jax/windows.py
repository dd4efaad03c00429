"""The one place for the time/space layout facts shared by data, training and inference.

Owns: frame rate and mel rate of the original system, the mel window of a video frame, the 5-frame window
size, and the lower-half / masked-input layout of face crops. Functions work on NumPy and JAX arrays alike
(plain slicing), with the frame axis or batch axis leading and NHWC images.
"""

from __future__ import annotations

FPS = 25  # video frame rate the original system assumes
MEL_STEPS_PER_SECOND = 80  # 16 kHz audio / hop 200
SYNC_T = 5  # frames per window seen by the expert / generator
MEL_STEPS = 16  # mel steps per window (0.2 s)
NUM_MELS = 80


def mel_window_start(frame: int, fps: float = FPS) -> int:
  """First mel step of the window that belongs to video frame `frame` (0-based): int(80 * f / fps)."""
  return int(MEL_STEPS_PER_SECOND * frame / fps)


def mel_window(mel, frame: int, fps: float = FPS):
  """The (80, 16) window of an (80, T) mel for frame `frame`, or None if it runs past the end."""
  start = mel_window_start(frame, fps)
  if start < 0 or start + MEL_STEPS > mel.shape[-1]:
    return None
  return mel[..., start : start + MEL_STEPS]


def lower_half(faces):
  """Rows H//2..H of NHWC faces (works for (..., H, W, C))."""
  height = faces.shape[-3]
  return faces[..., height // 2 :, :, :]


def mask_lower_half(faces):
  """A copy of NHWC faces with rows H//2..H set to 0 (the generator's masked target input)."""
  height = faces.shape[-3]
  if hasattr(faces, "at"):  # jax.Array
    return faces.at[..., height // 2 :, :, :].set(0)
  masked = faces.copy()
  masked[..., height // 2 :, :, :] = 0
  return masked


def stack_on_channels(frames):
  """(..., T, H, W, C) -> (..., H, W, T*C), frames in time order (frame0 channels first)."""
  *lead, t, h, w, c = frames.shape
  moved = frames.swapaxes(-4, -3).swapaxes(-3, -2)  # (..., H, W, T, C)
  return moved.reshape(*lead, h, w, t * c)
