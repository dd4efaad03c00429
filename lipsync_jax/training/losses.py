"""Loss functions of the three training stages, written to be NaN-free at the edges.

Owns: binary cross-entropy on probabilities (the sync expert's cosine) with PyTorch's semantics -- logs
clamped at -100 and the gradient's denominator clamped at 1e-12, so a cosine of exactly 0 or 1 (which
happens: the embeddings are post-ReLU) gives a finite loss and a finite gradient instead of NaN; stable
BCE-with-logits for the quality discriminator; L1; and the expert's accuracy at threshold 0.5.
All losses return float32 means, whatever the dtype of their inputs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

LOG_FLOOR = -100.0  # torch.nn.functional.binary_cross_entropy clamps log(p) and log(1-p) here
GRAD_EPS = 1e-12  # and divides its gradient by max(p * (1 - p), 1e-12)


def clamped_log(x: jax.Array) -> jax.Array:
  """log(x) clamped below at -100; x <= 0 gives -100 (no -inf, no NaN); a NaN x stays NaN."""
  positive = x > 0
  safe = jnp.where(positive, x, 1.0)
  clamped = jnp.where(positive, jnp.maximum(jnp.log(safe), LOG_FLOOR), LOG_FLOOR)
  return jnp.where(jnp.isnan(x), x, clamped)  # bad inputs must surface as non-finite losses


@jax.custom_jvp
def _bce_elementwise(probs: jax.Array, labels: jax.Array) -> jax.Array:
  p = jnp.clip(probs, 0.0, 1.0)
  return -(labels * clamped_log(p) + (1.0 - labels) * clamped_log(1.0 - p))


@_bce_elementwise.defjvp
def _bce_elementwise_jvp(primals, tangents):
  probs, labels = primals
  d_probs, d_labels = tangents
  p = jnp.clip(probs, 0.0, 1.0)
  loss = -(labels * clamped_log(p) + (1.0 - labels) * clamped_log(1.0 - p))
  dloss_dp = (p - labels) / jnp.maximum(p * (1.0 - p), GRAD_EPS)
  dloss_dy = clamped_log(1.0 - p) - clamped_log(p)
  return loss, dloss_dp * d_probs + dloss_dy * d_labels


def binary_cross_entropy(probs: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean BCE of probabilities `probs` against `labels` (broadcast), as torch's F.binary_cross_entropy.

  Values outside [0, 1] (a cosine of 1 + 1e-7 from rounding) are clipped to it.
  """
  probs = jnp.asarray(probs, jnp.float32)
  labels = jnp.asarray(labels, jnp.float32)
  probs, labels = jnp.broadcast_arrays(probs, labels)
  return jnp.mean(_bce_elementwise(probs, labels))


def cosine_similarity(audio_emb: jax.Array, face_emb: jax.Array) -> jax.Array:
  """(B, D) x (B, D) -> (B,) cosine of embeddings the expert already L2-normalised (float32 math)."""
  return jnp.sum(audio_emb.astype(jnp.float32) * face_emb.astype(jnp.float32), axis=-1)


def cosine_bce(audio_emb: jax.Array, face_emb: jax.Array, labels) -> jax.Array:
  """The expert's loss: BCE(cosine(audio, face), label); labels shaped (B,), (B, 1) or a scalar."""
  cos = cosine_similarity(audio_emb, face_emb)
  labels = jnp.asarray(labels, jnp.float32)
  if labels.ndim == 2:
    labels = labels[:, 0]
  return binary_cross_entropy(cos, labels)


def sync_accuracy(cos: jax.Array, labels) -> jax.Array:
  """Fraction of pairs whose cosine is on the label's side of 0.5 (cos > 0.5 <=> predicted in sync)."""
  labels = jnp.asarray(labels, jnp.float32).reshape(cos.shape)
  return jnp.mean(((cos > 0.5) == (labels > 0.5)).astype(jnp.float32))


def bce_with_logits(logits: jax.Array, labels) -> jax.Array:
  """Mean sigmoid BCE from logits (numerically stable; optax), labels broadcast to the logits."""
  logits = jnp.asarray(logits, jnp.float32)
  labels = jnp.broadcast_to(jnp.asarray(labels, jnp.float32), logits.shape)
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))


def l1(predictions: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean absolute error in float32 (torch.nn.L1Loss)."""
  return jnp.mean(jnp.abs(predictions.astype(jnp.float32) - targets.astype(jnp.float32)))
