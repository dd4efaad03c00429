"""lipsync_jax: Wav2Lip-style lip-sync models in JAX/Flax.

Owns nothing itself; see README.md "Code map" for which module owns what.
"""

__version__ = "0.1.0"
