"""Face detectors behind one interface (``FaceDetector.detect``) and one factory."""
from __future__ import annotations

from edge_fer.detect.base import Face, FaceDetector
from edge_fer.detect.blazeface import NMS_IOU, BlazeFaceDetector
from edge_fer.detect.haar import HaarDetector

__all__ = ["DETECTOR_KINDS", "BlazeFaceDetector", "Face", "FaceDetector", "HaarDetector", "build_detector"]

DETECTOR_KINDS = ("blazeface-short", "blazeface-full", "haar")
"""Allowed ``kind`` values; the first is the default."""


def build_detector(kind: str = DETECTOR_KINDS[0], *, score_threshold: float | None, min_face_px: float,
                   max_faces: int, nms_iou: float = NMS_IOU, num_threads: int = 1,
                   backend: str | None = None) -> FaceDetector:
    """Build the detector named by ``kind``.

    score_threshold None means MediaPipe's own (0.5 short range, 0.6 full range). Haar has no
    score, no NMS step and no TFLite interpreter, so it ignores score_threshold, nms_iou,
    num_threads and backend.
    """
    if kind == "haar":
        return HaarDetector(min_face_px=min_face_px, max_faces=max_faces)
    if kind in DETECTOR_KINDS:
        return BlazeFaceDetector(kind=kind.removeprefix("blazeface-"), score_threshold=score_threshold,
                                 min_face_px=min_face_px, max_faces=max_faces, nms_iou=nms_iou,
                                 num_threads=num_threads, backend=backend)
    raise ValueError(f"unknown detector {kind!r}; choose one of {', '.join(DETECTOR_KINDS)}")
