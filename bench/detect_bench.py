"""Face detectors on real footage: hit share against hand labels, and frames/s.

The set: media nobody in this project made, written into a folder by bench/real_footage/get_media.sh
(Megamind.avi, a CGI film clip with cuts; the scikit-image astronaut; face photos), labelled by hand in
bench/real_footage/labels.json (mouth centre and face height per frame; see bench/real_footage/README.md).

Per detector and labelled frame: the detector's best box, padded with the inference pads (0, 10, 0, 0) by
`lipsync_jax.media.track.pad_and_clip`, is a HIT when the labelled mouth centre lies in the LOWER half of the
padded box (x1 <= x < x2, (y1 + y2) / 2 <= y < y2) -- what a lip-sync crop needs. Printed per detector:
  hits / labelled faces, share, frames/s on the labelled frames (after a warm-up call), misses (no box),
  false alarms (a box on a labelled no-face frame), and for each video the same share when every frame of
  the clip at its native rate goes through THE face track as inference uses it (`track.track_boxes` on the
  `detect_faces` arrays with `frames=` for scene cuts; beside it the best box per frame without cuts), with
  the frames/s of detecting the whole clip.

  bash bench/real_footage/get_media.sh /tmp/real_footage
  python bench/detect_bench.py --media /tmp/real_footage [--detectors blazeface,haar,...]
         [--s3fd_weights s3fd.pth] [--batch 16] [--show_misses]

Detectors: 'blazeface' (MediaPipe BlazeFace on JAX, lipsync_jax.media.blazeface: the short-range model, the
full-range one on frames where it finds no face), 'blazeface_short', 'blazeface_full', 'blazeface_back' (one
model alone each), 'haar' (OpenCV's cascade), and 's3fd' when --s3fd_weights is given.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
from collections.abc import Callable

import cv2
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lipsync_jax.media import detectors, face_detector, track, video  # noqa: E402

DEFAULT_LABELS = REPO / "bench" / "real_footage" / "labels.json"
VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv", ".webm")


def builders(args: argparse.Namespace) -> dict[str, Callable[[], face_detector.FaceDetector]]:
  from lipsync_jax.media import blazeface

  table: dict[str, Callable[[], face_detector.FaceDetector]] = {
    "blazeface": lambda: blazeface.BlazeFaceDetector(batch_size=args.batch),
    "blazeface_short": lambda: blazeface.BlazeFaceDetector(
      "short_range", fallback=None, batch_size=args.batch
    ),
    "blazeface_full": lambda: blazeface.BlazeFaceDetector("full_range", fallback=None, batch_size=args.batch),
    "blazeface_back": lambda: blazeface.BlazeFaceDetector("back", fallback=None, batch_size=args.batch),
    "haar": lambda: detectors.get_detector("haar"),
  }
  if args.s3fd_weights:
    table["s3fd"] = lambda: detectors.get_detector("s3fd", weights=args.s3fd_weights)
  return table


def load_media(media: str, labels: list[dict]) -> tuple[dict[str, list[np.ndarray]], list[np.ndarray]]:
  """{source: all frames (videos at native rate) or [image]} and the labelled frames in label order."""
  sources: dict[str, list[np.ndarray]] = {}
  for name in dict.fromkeys(label["source"] for label in labels):
    path = os.path.join(media, name)
    if not os.path.exists(path):
      raise FileNotFoundError(
        f"{path!r} is missing: write the set with bash bench/real_footage/get_media.sh {media}"
      )
    if name.lower().endswith(VIDEO_SUFFIXES):
      sources[name] = list(video.iter_frames(path))
    else:
      image = cv2.imread(path, cv2.IMREAD_COLOR)
      if image is None:
        raise ValueError(f"OpenCV cannot read the image {path!r}")
      sources[name] = [image]
  frames = []
  for label in labels:
    clip = sources[label["source"]]
    if not 0 <= label["frame"] < len(clip):
      raise ValueError(f"label {label} points past the {len(clip)} frames of {label['source']}")
    frames.append(clip[label["frame"]])
  return sources, frames


def is_hit(box: tuple[int, int, int, int] | None, label: dict) -> bool:
  """The labelled mouth centre lies in the lower half of the (already padded) box."""
  if box is None:
    return False
  x1, y1, x2, y2 = box
  x, y = label["mouth_x"], label["mouth_y"]
  return x1 <= x < x2 and (y1 + y2) / 2 <= y < y2


def padded(box: tuple[int, int, int, int] | None, frame: np.ndarray) -> tuple[int, int, int, int] | None:
  if box is None:
    return None
  height, width = frame.shape[:2]
  return track.pad_and_clip(box, track.DEFAULT_PADS, width, height)


def measure(
  name: str, detector: face_detector.FaceDetector, labels, frames, sources, show_misses: bool
) -> dict:
  detector.detect_faces(frames[: min(len(frames), 4)])  # warm-up: compile / first-call costs
  start = time.perf_counter()
  faces = detector.detect_faces(frames)
  seconds = time.perf_counter() - start
  positives = [i for i, label in enumerate(labels) if label["mouth_x"] is not None]
  negatives = [i for i, label in enumerate(labels) if label["mouth_x"] is None]
  boxes = [padded(face_detector.best_box(f), frame) for f, frame in zip(faces, frames)]
  hits = [i for i in positives if is_hit(boxes[i], labels[i])]
  misses = [i for i in positives if boxes[i] is None]
  false_alarms = [i for i in negatives if boxes[i] is not None]
  result = dict(
    name=name, hits=len(hits), labelled=len(positives), fps=len(frames) / seconds, misses=len(misses),
    false_alarms=len(false_alarms), negatives=len(negatives), tracks={},
  )  # fmt: skip
  if show_misses:
    for i in positives:
      if i not in hits:
        label = labels[i]
        print(f"  {name}: not a hit {label['source']}#{label['frame']} box={boxes[i]} mouth=({label['mouth_x']}, "
              f"{label['mouth_y']}) [{label['note']}]")  # fmt: skip
  for source, clip in sources.items():
    if len(clip) < 2:
      continue
    height, width = clip[0].shape[:2]
    start = time.perf_counter()
    clip_faces = detector.detect_faces(clip)
    clip_seconds = time.perf_counter() - start
    on_clip = [i for i in positives if labels[i]["source"] == source]
    # As inference runs it: every face of every frame, and the frames for scene cuts; then the same track fed
    # only each frame's best box without cuts, to show what the cut handling is worth.
    variants = {
      "track": track.track_boxes(clip_faces, width, height, frames=clip)[0],
      "track_no_cuts": track.track_boxes([face_detector.best_box(f) for f in clip_faces], width, height)[0],
    }
    entry = dict(labelled=len(on_clip), fps=len(clip) / clip_seconds, frames=len(clip),
                 with_face=sum(len(f) > 0 for f in clip_faces))  # fmt: skip
    for variant, tracked in variants.items():
      entry[variant] = sum(is_hit(tracked[labels[i]["frame"]], labels[i]) for i in on_clip)
      if show_misses:
        for i in on_clip:
          if not is_hit(tracked[labels[i]["frame"]], labels[i]):
            label = labels[i]
            print(f"  {name} + {variant}: not a hit {source}#{label['frame']} box={tracked[label['frame']]} "
                  f"mouth=({label['mouth_x']}, {label['mouth_y']}) [{label['note']}]")  # fmt: skip
    result["tracks"][source] = entry
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--media", required=True, help="folder written by bench/real_footage/get_media.sh")
  parser.add_argument("--labels", default=str(DEFAULT_LABELS))
  parser.add_argument("--detectors", default="blazeface,blazeface_short,blazeface_full,blazeface_back,haar",
                      help="comma-separated; s3fd is added when --s3fd_weights is given")  # fmt: skip
  parser.add_argument("--s3fd_weights", default=None, help="the public s3fd.pth, to measure S3FD too")
  parser.add_argument("--batch", type=int, default=16, help="frames per device call (batched detectors)")
  parser.add_argument(
    "--show_misses", action="store_true", help="list every labelled frame that is not a hit"
  )
  args = parser.parse_args()

  with open(args.labels) as f:
    labels = json.load(f)["labels"]
  sources, frames = load_media(args.media, labels)
  table = builders(args)
  names = [n for n in args.detectors.split(",") if n]
  if args.s3fd_weights and "s3fd" not in names:
    names.append("s3fd")
  unknown = [n for n in names if n not in table]
  if unknown:
    parser.error(f"unknown detector(s) {unknown}; choose from {sorted(table)} (s3fd needs --s3fd_weights)")
  print(f"{len(labels)} labelled frames ({sum(lb['mouth_x'] is not None for lb in labels)} with a face) from "
        f"{len(sources)} sources; hit = labelled mouth centre in the lower half of the best box padded "
        f"{track.DEFAULT_PADS}")  # fmt: skip
  rows = []
  for name in names:
    start = time.perf_counter()
    detector = table[name]()
    print(f"{name}: built in {time.perf_counter() - start:.1f} s")
    rows.append(measure(name, detector, labels, frames, sources, args.show_misses))
  print()
  print(f"{'detector':16} {'hits':>7} {'share':>7} {'frames/s':>9} {'misses':>7} {'false alarms':>13}")
  for r in rows:
    print(f"{r['name']:16} {r['hits']:>3}/{r['labelled']:<3} {r['hits'] / r['labelled']:>7.1%} {r['fps']:>9.1f} "
          f"{r['misses']:>7} {r['false_alarms']:>6}/{r['negatives']:<6}")  # fmt: skip
  for source in [s for s in sources if len(sources[s]) > 1]:
    print(f"\nthrough the face track on all frames of {source} at the native rate: track.track_boxes(detect_faces, "
          "frames=) as inference uses it, and fed the best box per frame without scene cuts:")  # fmt: skip
    print(f"{'detector':16} {'track':>13} {'no cuts':>13} {'frames/s':>9} {'frames with a face':>19}")
    for r in rows:
      t = r["tracks"][source]
      n = t["labelled"]
      print(f"{r['name']:16} {t['track']:>3}/{n:<3} {t['track'] / n:>6.1%} {t['track_no_cuts']:>3}/{n:<3} "
            f"{t['track_no_cuts'] / n:>6.1%} {t['fps']:>9.1f} {t['with_face']:>9}/{t['frames']:<9}")  # fmt: skip


if __name__ == "__main__":
  main()
