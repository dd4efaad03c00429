#!/usr/bin/env bash
# Writes the real-footage set that bench/detect_bench.py measures face detectors on into a folder:
#   bash bench/real_footage/get_media.sh OUT_DIR
# Media nobody in this project made (sources and licences: bench/real_footage/README.md). Nothing here is
# committed: this script installs or finds them. Debian's opencv-doc (apt-get, as root) gives the clips
# and photos; scikit-image (a runtime dependency) gives the astronaut; espeak-ng speaks a sentence.
set -euo pipefail
out="${1:?usage: get_media.sh OUT_DIR}"
mkdir -p "$out"
data=/usr/share/doc/opencv-doc/examples/data
html=/usr/share/doc/opencv-doc/opencv4/html
apt_install() {  # apt-get install the given Debian packages (root, or sudo when there is one)
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo > /dev/null || { echo "get_media.sh: need root (or sudo) to apt-get install $*" >&2; exit 1; }
    sudo=sudo
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" > /dev/null
}
if [ ! -f "$data/Megamind.avi" ]; then apt_install opencv-doc; fi
if ! command -v espeak-ng > /dev/null; then apt_install espeak-ng; fi
for name in Megamind.avi Megamind_bugy.avi messi5.jpg; do cp "$data/$name" "$out/$name"; done
# Face photos from OpenCV's documentation (the face-swap and face-recognition tutorials).
for name in face_swapped.jpg facereg.jpg; do
  if [ -f "$html/$name" ]; then cp "$html/$name" "$out/$name"; fi
done
python - "$out" <<'PY'
import sys

import cv2
import skimage.data

cv2.imwrite(f"{sys.argv[1]}/astronaut.png", cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
PY
espeak-ng -w "$out/speech.wav" "A lip sync expert is all you need for speech to lip generation in the wild."
ls -l "$out"
