#!/usr/bin/env bash
# Build the virtualenv that runs the peer, the `fer` package, for bench/pipeline_fps.py.
#
#   bash bench/setup_peer_venv.sh [VENV_DIR]     (default build/bench-peer-venv)
#
# fer is installed --no-deps, with the packages that `from fer.fer import FER` and
# FER(use_tflite=True) import: tensorflow (tf.lite.Interpreter; tensorflow.keras at import),
# opencv (Haar cascade), numpy, requests, Pillow, pkg_resources (setuptools<81).
# Left out: facenet-pytorch (only for FER(mtcnn=True); 2.6.0 pins torch>=2.2,<2.3 and numpy<2,
# and those torch wheels pull GBs of CUDA packages) and moviepy, ffmpeg-python, pandas, tqdm,
# matplotlib (only for fer's Video class and drawing).
# OpenCV is edge-fer's headless build at the same version, so both pipelines run the same OpenCV
# binary (fer asks for opencv-contrib-python, a superset with the same Haar cascade code).
set -euo pipefail
case ${1:-} in -h|--help) sed -n '2,13p' "$0"; exit 0 ;; esac

VENV=${1:-build/bench-peer-venv}
PYTHON=${PYTHON:-python3}
# The pinned version lives in bench/peer.py, which bench/model_accuracy.py downloads too.
FER_VERSION=$("$PYTHON" -c 'import sys; sys.path.insert(0, sys.argv[1]); from peer import PEER_VERSION; print(PEER_VERSION)' \
  "$(dirname "$0")")
TF_VERSION=2.21.0
# tensorflow-cpu (no CUDA libraries) exists for x86_64 only; on a Pi (aarch64) plain tensorflow is the CPU build.
if [ "$(uname -m)" = x86_64 ]; then TENSORFLOW=tensorflow-cpu==$TF_VERSION; else TENSORFLOW=tensorflow==$TF_VERSION; fi
OPENCV=opencv-python-headless==4.11.0.86

"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "$TENSORFLOW" "$OPENCV" "setuptools<81" requests Pillow
"$VENV/bin/pip" install -q --no-deps --only-binary=:all: "fer==$FER_VERSION"
"$VENV/bin/python" -c "from fer.fer import FER; FER(use_tflite=True); print('fer', __import__('fer').__version__, 'ok')"
