"""The per-frame step: frame -> detect -> classify -> track -> FrameResult. No I/O.

Capture feeds it, the sinks drain it. Boxes and crops live only inside ``step``; what comes
out (``FrameResult``) holds ephemeral ids and labels only. Every other frame's faces are
classified mirrored: the tracker's smoothing then averages both views of each face, an ensemble
at the cost of one view (edge_fer.classify).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from edge_fer.capture.base import Frame
from edge_fer.classify import ExpressionClassifier
from edge_fer.detect.base import FaceDetector
from edge_fer.messages import FrameResult
from edge_fer.track import Tracker


@dataclass
class StageTimes:
    """Milliseconds spent in each stage on the last frame."""

    detect_ms: float = 0.0
    classify_ms: float = 0.0
    track_ms: float = 0.0


class Pipeline:
    def __init__(self, detector: FaceDetector, classifier: ExpressionClassifier, tracker: Tracker):
        self.detector = detector
        self.classifier = classifier
        self.tracker = tracker
        self.times = StageTimes()
        self._frames = 0

    def step(self, frame: Frame, wall: float) -> FrameResult:
        mirrored = self._frames % 2 == 1
        self._frames += 1
        t0 = time.perf_counter()
        faces = self.detector.detect(frame.image)
        t1 = time.perf_counter()
        expressions = self.classifier.classify(frame.image, faces, mirrored=mirrored)
        t2 = time.perf_counter()
        present, events = self.tracker.update([f.box for f in faces], [e.probabilities for e in expressions],
                                               frame.timestamp, wall)
        t3 = time.perf_counter()
        self.times = StageTimes((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)
        return FrameResult(wall, present, events)
