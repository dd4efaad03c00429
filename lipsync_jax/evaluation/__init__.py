"""Evaluation: LSE-D / LSE-C with SyncNet v2, sync scoring with our own expert, mouth PSNR / SSIM.

Library functions work on in-memory arrays (so training can call them); `python -m lipsync_jax.evaluate`
is the CLI over videos. Owns, in data-flow order:
  faces.py    evaluation inputs: the face track of a clip (lipsync_jax.media.track, as inference and
              preprocessing), 25 fps frames (lipsync_jax.media.fps via video.iter_frames), EvaluationError
  offsets.py  the AV-offset / distance math shared by LSE and expert sync (pure NumPy)
  lse.py      LSE-D / LSE-C / AV offset with SyncNet v2 (MFCC features, syncnet_python's face crop)
  sync.py     per-window sync probability, AV offset and confidence with our expert (SyncNet)
  recon.py    mouth-region PSNR / SSIM against ground truth
SyncNet v2 features and expert embeddings run on the shared batch runner (lipsync_jax.inference.runner).
"""
