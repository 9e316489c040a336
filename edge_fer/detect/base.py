"""What every face detector returns."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Face:
    """A detected face in frame pixels.

    ``box`` is (x, y, w, h). ``keypoints`` is (6, 2) in BlazeFace order (right eye, left eye,
    nose tip, mouth, right ear tragion, left ear tragion; "right" is the subject's right),
    or None for detectors without landmarks (Haar).
    """

    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray | None = None


class FaceDetector(Protocol):
    def detect(self, image_bgr: np.ndarray) -> list[Face]: ...
