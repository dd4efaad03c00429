"""Inference and serving: lip-sync a video (the library behind `python -m lipsync_jax.infer`), export and serve.

Owns, in data-flow order:
  frames.py   the FACE input (a video or a still image, resize / rotate / crop), background decode and
              encode threads, per-stage timing, InferenceError
  runner.py   THE fixed-shape padded batch runner (compiled once per batch shape, the last batch padded),
              shared by the generator here and by lipsync_jax.evaluation (SyncNet v2 features, expert sync)
  lipsync.py  mel chunks, the streaming pipeline and the `lipsync(face, audio, variables, out, meta)` API
  export.py   the jax.export serving artifact (BN folded, params as a pickle-free .npz; CLI lipsync_jax/export.py)
  serving.py  `load(dir)` -> a callable over that artifact, no model code needed
"""
