"""OpenCV's Viola-Jones frontal-face cascade: the fallback when no TFLite interpreter is usable.

Needs ``cv2.CascadeClassifier`` and the cascades under ``cv2.data.haarcascades``, which
opencv-python(-headless) 4.x ships; OpenCV 5 wheels dropped both, hence ``<5`` in pyproject.
It is 10-30x slower than BlazeFace and frontal-only, and it has no keypoints.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge_fer.detect.base import Face
from edge_fer.errors import ModelError

CASCADE_FILE = "haarcascade_frontalface_default.xml"
CASCADE_WINDOW_PX = 24  # the cascade's training window (the <width>/<height> in CASCADE_FILE)
SCALE_FACTOR = 1.1  # detectMultiScale's default pyramid step
MIN_NEIGHBORS = 5  # OpenCV's face-detection tutorial; the default 3 lets in more false faces
HAAR_SCORE = 1.0  # the cascade gives no calibrated confidence; MIN_NEIGHBORS is its threshold


def cascade_path() -> Path:
    """The frontal-face cascade shipped with OpenCV, or a ModelError that says how to get it."""
    data = getattr(cv2, "data", None)
    path = Path(getattr(data, "haarcascades", "")) / CASCADE_FILE
    if not hasattr(cv2, "CascadeClassifier") or not path.is_file():
        raise ModelError(f"the Haar detector needs OpenCV 4's CascadeClassifier and {CASCADE_FILE}, which "
                         f"OpenCV {cv2.__version__} lacks; pip install 'opencv-python-headless>=4.8,<5' "
                         "or use detector blazeface-short")
    return path


class HaarDetector:
    """Largest faces first; every face gets score HAAR_SCORE and keypoints None."""

    def __init__(self, *, min_face_px: float = 0, max_faces: int = 1):
        path = cascade_path()
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise ModelError(f"OpenCV could not load {path}; reinstall opencv-python-headless")
        self.min_face_px = min_face_px
        self.max_faces = max_faces
        # The cascade cannot see faces under its window, so shrinking the frame until the smallest
        # wanted face fills that window loses nothing and saves most of the time.
        self._shrink = min(1.0, CASCADE_WINDOW_PX / min_face_px) if min_face_px > 0 else 1.0

    def detect(self, image_bgr: np.ndarray) -> list[Face]:
        image = image_bgr
        if self._shrink < 1.0:
            image = cv2.resize(image, None, fx=self._shrink, fy=self._shrink, interpolation=cv2.INTER_AREA)
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        found = self._cascade.detectMultiScale(gray, scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBORS,
                                               minSize=(CASCADE_WINDOW_PX, CASCADE_WINDOW_PX))
        boxes = np.asarray(found, np.float64).reshape(-1, 4) / self._shrink  # () when none found
        faces = [Face((float(x), float(y), float(w), float(h)), HAAR_SCORE) for x, y, w, h in boxes
                 if min(w, h) >= self.min_face_px]
        faces.sort(key=lambda face: face.box[2] * face.box[3], reverse=True)
        return faces[:self.max_faces]
