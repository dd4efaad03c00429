"""End to end lip-sync speed: `python -m lipsync_jax.infer` against the original Wav2Lip inference.py's flow.

Clips (generated: a demo-corpus talking face on a plain canvas, 25 fps, its speech-like audio as a .wav):
  short  82 frames 640x360 (3.3 s)
  720p   10 s 1280x720 (250 frames)
Both programs get the same random full-size generator (tests/torch_reference.py's Wav2Lip, seeded, saved
in the official .pth format; converted once to a lipsync_jax variables directory, as
`python -m lipsync_jax.convert` does) and the same fixed face box, and run as fresh processes, timed from
the outside (wall clock, interpreter start-up and imports included):
  ours, first run   `python -m lipsync_jax.infer --box ...` with an empty compile cache directory
                    (LIPSYNC_JAX_COMPILE_CACHE=<fresh dir>): everything compiles
  ours, second run  the same command, the same cache directory: compiled programs load from the cache
  original          `python bench/infer_bench.py original ...`: a faithful re-implementation of the
                    original inference.py (read every frame with cv2, the fixed box, the original audio.py
                    mel (librosa), mel chunks, batches of 128 under torch.no_grad(), cv2.VideoWriter DIVX
                    .avi, then the original's `ffmpeg -i audio -i avi -strict -2 -q:v 1 out.mp4` done with
                    PyAV (no ffmpeg binary needed): re-encoded to H.264 (libx264 defaults) + AAC)
Prints each process's wall and CPU seconds (CPU is less distorted by other load on a shared machine), a
table (clip, ours first run, ours second run, original: wall seconds), where our time goes (from
--stats_json: start-up + imports, weights, the imports inside lipsync(), audio, compile, generator, ...,
the main thread's waits, and the busy seconds of the background threads: mel (overlaps the compile),
decode, encode), the XLA programs each run compiled / loaded from the cache, and how far our output is
from the original's inside the face box (same weights: a small difference says both did the same work).
`--sweep` adds the generator alone per batch size (JAX, BN folded, vs PyTorch): how the bucket sizes of
lipsync_jax.inference.runner.bucket_sizes were chosen.

  python bench/infer_bench.py [--clips short,720p] [--repeats 1] [--sweep 8,16,32,64,128] [--keep DIR]
"""

from __future__ import annotations

import argparse
import fractions
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
CLIPS = {"short": (82, 640, 360, 240), "720p": (250, 1280, 720, 480)}  # frames, width, height, face size
FPS = 25


# ---------------------------------------------------------------------------------------------------------
# The original inference.py, re-implemented for the comparison (runs in its own process: `original`).
# Hand-written on purpose: it is the baseline, so it keeps the original's structure and libraries (cv2,
# librosa, torch), not ours.


def _original_melspectrogram(wav: np.ndarray) -> np.ndarray:
  """The original audio.py's melspectrogram with its hparams (preemphasis 0.97, n_fft 800, hop 200, 80 mels
  55..7600 Hz, ref 20 dB, min -100 dB, symmetric normalisation to [-4, 4])."""
  import librosa
  from scipy import signal

  emphasised = signal.lfilter([1, -0.97], [1], wav)
  # pad_mode: the default of the librosa (0.7) the original ran with; librosa >= 0.10 pads with zeros.
  d = librosa.stft(y=emphasised, n_fft=800, hop_length=200, win_length=800, pad_mode="reflect")
  mel_basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
  min_level = np.exp(-100 / 20 * np.log(10))
  s = 20 * np.log10(np.maximum(min_level, np.dot(mel_basis, np.abs(d)))) - 20
  return np.clip(8 * ((s + 100) / 100) - 4, -4, 4)


def original_main(argv: list[str]) -> None:
  """The original inference.py's main() for a video face and a fixed --box; prints its stage seconds."""
  start = time.perf_counter()
  parser = argparse.ArgumentParser()
  parser.add_argument("--checkpoint_path", required=True)
  parser.add_argument("--face", required=True)
  parser.add_argument("--audio", required=True)
  parser.add_argument("--outfile", required=True)
  parser.add_argument("--box", type=int, nargs=4, required=True)
  parser.add_argument("--wav2lip_batch_size", type=int, default=128)
  parser.add_argument("--img_size", type=int, default=96)
  args = parser.parse_args(argv)
  import av
  import cv2
  import librosa
  import torch

  sys.path.insert(0, str(REPO / "tests"))
  from torch_reference import Wav2LipRef

  seconds = {"imports": time.perf_counter() - start}

  def stage(name, since):
    seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - since
    return time.perf_counter()

  t = time.perf_counter()
  video_stream = cv2.VideoCapture(args.face)
  fps = video_stream.get(cv2.CAP_PROP_FPS)
  full_frames = []
  while True:
    still_reading, frame = video_stream.read()
    if not still_reading:
      video_stream.release()
      break
    full_frames.append(frame)
  t = stage("read_frames", t)
  wav = librosa.core.load(args.audio, sr=16000)[0]
  mel = _original_melspectrogram(wav)
  mel_chunks, i, mel_step_size = [], 0, 16
  while True:
    start_idx = int(i * 80.0 / fps)
    if start_idx + mel_step_size > len(mel[0]):
      mel_chunks.append(mel[:, len(mel[0]) - mel_step_size :])
      break
    mel_chunks.append(mel[:, start_idx : start_idx + mel_step_size])
    i += 1
  full_frames = full_frames[: len(mel_chunks)]
  t = stage("audio_mel", t)

  def datagen(frames, mels):
    img_batch, mel_batch, frame_batch, coords_batch = [], [], [], []
    y1, y2, x1, x2 = args.box
    face_det_results = [[f[y1:y2, x1:x2], (y1, y2, x1, x2)] for f in frames]

    def batch():
      img, mel = np.asarray(img_batch), np.asarray(mel_batch)
      img_masked = img.copy()
      img_masked[:, args.img_size // 2 :] = 0
      img = np.concatenate((img_masked, img), axis=3) / 255.0
      return img, np.reshape(mel, [len(mel), mel.shape[1], mel.shape[2], 1]), frame_batch, coords_batch

    for i, m in enumerate(mels):
      idx = i % len(frames)
      frame_to_save = frames[idx].copy()
      face, coords = face_det_results[idx].copy()
      face = cv2.resize(face, (args.img_size, args.img_size))
      img_batch.append(face)
      mel_batch.append(m)
      frame_batch.append(frame_to_save)
      coords_batch.append(coords)
      if len(img_batch) >= args.wav2lip_batch_size:
        yield batch()
        img_batch, mel_batch, frame_batch, coords_batch = [], [], [], []
    if len(img_batch) > 0:
      yield batch()

  avi = os.path.splitext(args.outfile)[0] + ".avi"
  gen = datagen(full_frames.copy(), mel_chunks)
  while True:
    t = time.perf_counter()
    item = next(gen, None)
    t = stage("prep", t)
    if item is None:
      break
    img_batch, mel_batch, frames, coords = item
    if "model_load" not in seconds:
      model = Wav2LipRef()
      checkpoint = torch.load(args.checkpoint_path, map_location="cpu", weights_only=True)
      model.load_state_dict({k.replace("module.", ""): v for k, v in checkpoint["state_dict"].items()})
      model = model.eval()
      frame_h, frame_w = full_frames[0].shape[:-1]
      out = cv2.VideoWriter(avi, cv2.VideoWriter_fourcc(*"DIVX"), fps, (frame_w, frame_h))
      t = stage("model_load", t)
    img_batch = torch.FloatTensor(np.transpose(img_batch, (0, 3, 1, 2)))
    mel_batch = torch.FloatTensor(np.transpose(mel_batch, (0, 3, 1, 2)))
    with torch.no_grad():
      pred = model(mel_batch, img_batch)
    pred = pred.cpu().numpy().transpose(0, 2, 3, 1) * 255.0
    t = stage("generator", t)
    for p, f, c in zip(pred, frames, coords):
      y1, y2, x1, x2 = c
      p = cv2.resize(p.astype(np.uint8), (x2 - x1, y2 - y1))
      f[y1:y2, x1:x2] = p
      out.write(f)
    t = stage("paste_write_avi", t)
  out.release()
  # `ffmpeg -y -i AUDIO -i temp/result.avi -strict -2 -q:v 1 OUTFILE`: the .avi re-encoded to H.264
  # (libx264 at ffmpeg's defaults for .mp4) and the audio to AAC.
  t = time.perf_counter()
  with av.open(avi) as src_video, av.open(args.audio) as src_audio, av.open(args.outfile, "w") as dst:
    v_out = dst.add_stream("libx264", rate=round(fps))
    v_out.width, v_out.height, v_out.pix_fmt = frame_w, frame_h, "yuv420p"
    a_out = dst.add_stream("aac", rate=16000)
    for index, frame in enumerate(src_video.decode(video=0)):
      frame = frame.reformat(format="yuv420p")
      frame.pts, frame.time_base = index, fractions.Fraction(1, round(fps))
      dst.mux(v_out.encode(frame))
    dst.mux(v_out.encode(None))
    for frame in src_audio.decode(audio=0):
      frame.pts = None
      dst.mux(a_out.encode(frame))
    dst.mux(a_out.encode(None))
  stage("ffmpeg_mux", t)
  seconds["main"] = time.perf_counter() - start
  print(json.dumps({"frames": len(mel_chunks), "seconds": seconds}))


# ---------------------------------------------------------------------------------------------------------
# Set-up: clips and weights.


def make_clip(path: str, num_frames: int, width: int, height: int, face_size: int) -> tuple[int, ...]:
  """A demo-corpus talking face centred on a width x height canvas (mp4) + its audio (.wav next to it).

  Returns the face box as (top, bottom, left, right) (the --box order).
  """
  import soundfile

  from lipsync_jax.data import synthetic
  from lipsync_jax.media import video

  seconds = num_frames / FPS
  clip = synthetic.render_clip(synthetic.ClipSpec("bench/clip", 0, 0, seconds, seed=0, frame_size=face_size))
  canvas = np.full((height, width, 3), (60, 70, 80), np.uint8)
  x0, y0 = (width - face_size) // 2, (height - face_size) // 2
  count = 0
  with video.VideoWriter(path, FPS, width, height) as writer:
    for frame in clip.frames():
      canvas[y0 : y0 + face_size, x0 : x0 + face_size] = frame
      writer.write(canvas)
      count += 1
    writer.close(audio=clip.wav, sample_rate=16000)
  if count != num_frames:
    raise RuntimeError(f"rendered {count} frames, wanted {num_frames}")
  soundfile.write(os.path.splitext(path)[0] + ".wav", clip.wav, 16000)
  return (y0, y0 + face_size, x0, x0 + face_size)


def make_weights(work: str) -> tuple[str, str]:
  """(official-format .pth, lipsync_jax variables dir) of one seeded random full-size generator."""
  pth, var_dir = os.path.join(work, "wav2lip_random.pth"), os.path.join(work, "wav2lip_random_vars")
  if not os.path.exists(var_dir):
    sys.path.insert(0, str(REPO / "tests"))
    from torch_reference import Wav2LipRef, randomize, save_official

    from lipsync_jax import weights

    save_official(randomize(Wav2LipRef().eval(), seed=0), pth)
    variables, _ = weights.load(pth, "wav2lip")
    weights.save_variables(var_dir, variables, "wav2lip")
  return pth, var_dir


# ---------------------------------------------------------------------------------------------------------
# Runs.


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, str]:
  """Runs cmd; returns (wall seconds, stdout). Also prints its CPU seconds (user + system, all threads),
  which other processes on a shared machine distort less than the wall clock."""
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  start = time.perf_counter()
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
  wall = time.perf_counter() - start
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  if proc.returncode != 0:
    raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
  cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
  label = "ours" if "lipsync_jax.infer" in cmd else "original"
  clip = os.path.basename(cmd[cmd.index("--face") + 1])
  print(f"  {label:<8} {clip}: wall {wall:6.2f} s  CPU {cpu:6.2f} s")
  return wall, proc.stdout


def run_ours(clip: str, box, var_dir: str, out: str, cache_dir: str, stats: str) -> tuple[float, dict]:
  env = dict(os.environ, LIPSYNC_JAX_COMPILE_CACHE=cache_dir)
  cmd = [sys.executable, "-m", "lipsync_jax.infer", "--face", clip, "--audio", clip[:-4] + ".wav"]
  cmd += ["--checkpoint", var_dir, "--out", out, "--box", *map(str, box), "--no_progress"]
  wall, _ = timed(cmd + ["--stats_json", stats], env)
  with open(stats) as f:
    return wall, json.load(f)


def run_original(clip: str, box, pth: str, out: str) -> tuple[float, dict]:
  cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "original", "--checkpoint_path", pth]
  cmd += ["--face", clip, "--audio", clip[:-4] + ".wav", "--outfile", out, "--box", *map(str, box)]
  wall, stdout = timed(cmd)
  return wall, json.loads(stdout.strip().splitlines()[-1])


def face_difference(ours: str, original: str, box) -> float:
  """Mean |ours - original| (0..255) inside the face box over all frames."""
  from lipsync_jax.media import video

  a, _ = video.read_frames(ours)
  b, _ = video.read_frames(original)
  n = min(len(a), len(b))
  y1, y2, x1, x2 = box
  return float(np.abs(a[:n, y1:y2, x1:x2].astype(int) - b[:n, y1:y2, x1:x2].astype(int)).mean())


def breakdown(wall: float, stats: dict) -> str:
  t = stats["timings_s"]
  main_thread = ("audio", "compile", "prep", "generator", "paste", "mux")
  rest = stats["wall_s"] - sum(t.get(k, 0.0) for k in main_thread)
  parts = [
    ("startup+imports", wall - stats["main_s"]),
    ("weights", stats["load_s"]),
    ("lipsync imports", stats["main_s"] - stats["load_s"] - stats["wall_s"]),
    ("audio", t.get("audio", 0.0)),
    ("compile", t.get("compile", 0.0)),
    ("generator", t.get("generator", 0.0)),
    ("prep+paste", t.get("prep", 0.0) + t.get("paste", 0.0)),
    ("mux", t.get("mux", 0.0)),
    ("waiting (mel, decode, encode)", rest),
  ]
  text = "  ".join(f"{k} {v:.2f}" for k, v in parts)
  busy = f"mel {t.get('mel', 0.0):.2f} decode {t.get('decode', 0.0):.2f} encode {t.get('encode', 0.0):.2f}"
  return (
    f"{text}  | background threads (busy): {busy} | XLA programs {stats['xla_programs']}, from cache "
    f"{stats['xla_cache_hits']}, batch shapes traced {stats['compiles']}"
  )


def sweep(batches: list[int], repeats: int, var_dir: str, pth: str) -> None:
  """The generator alone per batch size: JAX (BN folded, what inference runs) and PyTorch, ms per frame."""
  import torch

  sys.path.insert(0, str(REPO / "tests"))
  from torch_reference import Wav2LipRef

  from lipsync_jax import weights
  from lipsync_jax.inference.lipsync import Generator

  variables, meta = weights.load(var_dir, "wav2lip")
  model = Wav2LipRef().eval()
  state = torch.load(pth, weights_only=True)["state_dict"]
  model.load_state_dict({k.replace("module.", ""): v for k, v in state.items()})
  rng = np.random.default_rng(0)
  print(f"\n[generator alone] ms per frame, median of {repeats} (JAX BN folded float32; PyTorch no_grad)")
  for b in batches:
    mels = rng.normal(size=(b, 80, 16)).astype(np.float32)
    crops = rng.integers(0, 255, (b, 96, 96, 3), dtype=np.uint8)
    gen = Generator(variables, meta, b, buckets=(b,))
    start = time.perf_counter()
    gen.compile(b)
    compile_s = time.perf_counter() - start
    gen(mels, crops)
    jax_s = _median_time(lambda gen=gen, mels=mels, crops=crops: gen(mels, crops), repeats)
    mel_t, faces_t = torch.from_numpy(mels[:, None]), torch.rand(b, 6, 96, 96)
    with torch.no_grad():
      model(mel_t, faces_t)
      torch_s = _median_time(lambda mel_t=mel_t, faces_t=faces_t: model(mel_t, faces_t), repeats)
    print(
      f"  batch {b:4d}: JAX {1000 * jax_s / b:6.1f} ms/frame (compile {compile_s:.1f} s)   "
      f"PyTorch {1000 * torch_s / b:6.1f} ms/frame"
    )


def _median_time(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--clips", default="short,720p", help=f"comma-separated, of {sorted(CLIPS)}")
  parser.add_argument("--repeats", type=int, default=1, help="runs of each program per clip (median)")
  parser.add_argument("--sweep", default="", help="batch sizes for the generator-alone sweep, e.g. 8,32,128")
  parser.add_argument("--keep", default=None, help="directory for clips, weights and outputs (reused)")
  args = parser.parse_args(argv)
  from lipsync_jax import logs

  logs.setup()
  import torch

  work = args.keep or tempfile.mkdtemp(prefix="infer_bench_")
  os.makedirs(work, exist_ok=True)
  threads = torch.get_num_threads()
  print(f"{os.cpu_count()} CPUs visible, torch {torch.__version__} ({threads} threads); work {work}")
  start = time.perf_counter()
  pth, var_dir = make_weights(work)
  print(f"weights: {pth}, {var_dir} ({time.perf_counter() - start:.1f} s)")
  rows, details = [], []
  for name in args.clips.split(","):
    frames, width, height, face = CLIPS[name]
    clip = os.path.join(work, f"{name}.mp4")
    box_file = clip + ".box.json"
    if not os.path.exists(box_file):
      start = time.perf_counter()
      box = make_clip(clip, frames, width, height, face)
      with open(box_file, "w") as f:
        json.dump(box, f)
      print(f"made {clip}: {frames} frames {width}x{height} in {time.perf_counter() - start:.1f} s")
    with open(box_file) as f:
      box = json.load(f)
    firsts, seconds, originals = [], [], []
    for rep in range(args.repeats):
      cache_dir = tempfile.mkdtemp(prefix="compile_cache_", dir=work)
      out = os.path.join(work, f"{name}_ours.mp4")
      first = run_ours(clip, box, var_dir, out, cache_dir, os.path.join(work, f"{name}_1.json"))
      second = run_ours(clip, box, var_dir, out, cache_dir, os.path.join(work, f"{name}_2.json"))
      orig_out = os.path.join(work, f"{name}_original.mp4")
      original = run_original(clip, box, pth, orig_out)
      firsts.append(first)
      seconds.append(second)
      originals.append(original)
      details.append((name, rep, first, second, original))
    med = lambda runs: statistics.median(w for w, _ in runs)
    diff = face_difference(out, orig_out, box)
    rows.append((name, f"{frames} frames {width}x{height}", med(firsts), med(seconds), med(originals), diff))
  print(f"\n[end to end] wall seconds, fresh processes ({args.repeats} run(s) each, median)")
  head = f"{'clip':<7} {'input':<24} {'ours 1st run':>13} {'ours 2nd run':>13} {'original':>9}"
  print(f"  {head}  face |ours-orig|")
  for name, desc, first, second, original, diff in rows:
    print(f"  {name:<7} {desc:<24} {first:13.2f} {second:13.2f} {original:9.2f}  {diff:.2f}")
  print("\n[where the time goes] seconds")
  for name, rep, first, second, original in details:
    print(f"  {name} run {rep} ours 1st: wall {first[0]:.2f}: {breakdown(*first)}")
    print(f"  {name} run {rep} ours 2nd: wall {second[0]:.2f}: {breakdown(*second)}")
    stages = "  ".join(f"{k} {v:.2f}" for k, v in original[1]["seconds"].items())
    startup = original[0] - original[1]["seconds"]["main"]
    print(f"  {name} run {rep} original: wall {original[0]:.2f}: startup {startup:.2f}  {stages}")
  if args.sweep:
    sweep([int(b) for b in args.sweep.split(",")], max(3, args.repeats), var_dir, pth)


if __name__ == "__main__":
  if sys.argv[1:2] == ["original"]:
    original_main(sys.argv[2:])
  else:
    main()
