#!/usr/bin/env bash
# The photo peers' virtualenvs, outside the repository: mediapipe 0.10.21 pins numpy<2 and an old protobuf,
# so neither it nor dlib goes into kpjax's environment. benchmarks/photo_peers.py runs them from here.
#
#   bash benchmarks/peers/setup_photo_peers.sh [mediapipe] [dlib]      # default: both
#
# KPJAX_PEERS picks the folder (default ~/.cache/kpjax/peers), PYTHON the interpreter (default python3;
# mediapipe 0.10.21 has wheels for CPython 3.9-3.12 only).
set -euo pipefail

root="${KPJAX_PEERS:-$HOME/.cache/kpjax/peers}"
python="${PYTHON:-python3}"
declare -A requirements=(
  [mediapipe]="mediapipe==0.10.21"
  # dlib-bin: dlib's prebuilt wheels (no C++ build); face-recognition-models ships the 68-point predictor.
  [dlib]="dlib-bin==20.0.1.post1 face-recognition-models==0.3.0 numpy"
)

peers=("$@")
[[ ${#peers[@]} -gt 0 ]] || peers=(mediapipe dlib)
for name in "${peers[@]}"; do
  if [[ -z "${requirements[$name]:-}" ]]; then
    echo "error: unknown peer '$name' (mediapipe or dlib)" >&2
    exit 2
  fi
done
for name in "${peers[@]}"; do
  "$python" -m venv "$root/$name"
  "$root/$name/bin/python" -m pip install --quiet --upgrade pip
  # shellcheck disable=SC2086  # the list is word-split on purpose
  "$root/$name/bin/python" -m pip install --quiet ${requirements[$name]}
  echo "$name: $root/$name ($("$root/$name/bin/python" -m pip freeze | tr '\n' ' '))"
done
