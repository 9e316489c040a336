"""The per-frame step: frame -> detect -> classify -> track -> FrameResult. No I/O.

Capture feeds it, the sinks drain it. Boxes and crops live only inside ``step``; what comes
out (``FrameResult``) holds ephemeral ids and labels only. Every other classification is of the
mirrored faces: the tracker's smoothing then averages both views of each face, an ensemble at the
cost of one view (edge_fer.classify). With a rate cap, frames between classifications are detected
and tracked only: the classifier is most of a frame's cost on a Pi.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from edge_fer.capture.base import Frame
from edge_fer.classify import ExpressionClassifier
from edge_fer.detect.base import FaceDetector
from edge_fer.messages import FrameResult
from edge_fer.track import Tracker

RATE_SLACK = 0.1
"""A frame counts as due for classification this fraction of the interval early: camera
timestamps jitter by milliseconds, and a frame 1 ms early would otherwise wait a whole frame."""


@dataclass
class StageTimes:
    """What the last frame cost: milliseconds per stage, and how many faces the detector found
    (the tracker also reports faces missed for less than ``max_missed_s``)."""

    detect_ms: float = 0.0
    classify_ms: float = 0.0
    track_ms: float = 0.0
    classified: bool = False  # faces classified on this frame (max_rate_hz skips some)
    detected: int = 0


class Pipeline:
    def __init__(self, detector: FaceDetector, classifier: ExpressionClassifier, tracker: Tracker,
                 max_rate_hz: float = 0.0):
        """``max_rate_hz``: classify the faces of at most this many frames per second (0 = every frame)."""
        self.detector = detector
        self.classifier = classifier
        self.tracker = tracker
        self.times = StageTimes()
        self._interval = 1.0 / max_rate_hz if max_rate_hz > 0 else 0.0
        self._classified = 0
        self._last_classified: float | None = None

    def _due(self, timestamp: float) -> bool:
        return (self._last_classified is None
                or timestamp - self._last_classified >= self._interval * (1 - RATE_SLACK))

    def step(self, frame: Frame, wall: float) -> FrameResult:
        t0 = time.perf_counter()
        faces = self.detector.detect(frame.image)
        t1 = time.perf_counter()
        probs: list = [None] * len(faces)
        classified = bool(faces) and self._due(frame.timestamp)
        if classified:
            mirrored = self._classified % 2 == 1
            probs = [e.probabilities for e in self.classifier.classify(frame.image, faces, mirrored=mirrored)]
            self._classified += 1
            self._last_classified = frame.timestamp
        t2 = time.perf_counter()
        present, events = self.tracker.update([f.box for f in faces], probs, frame.timestamp, wall)
        t3 = time.perf_counter()
        self.times = StageTimes((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3, classified, len(faces))
        return FrameResult(wall, present, events, detected=len(faces))
