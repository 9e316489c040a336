"""Windowed, k-anonymous label counts for the ``aggregate`` privacy mode.

Windows are aligned to multiples of the window length in wall-clock time (12:00:00, 12:01:00,
...). Each track seen in a window counts once, under the label it showed in most of its frames
there; a tie between labels goes to the one seen in more frames. A window is released only when at least ``k_min`` distinct tracks contributed; otherwise
it is discarded, never carried over. Track ids are forgotten when their window closes.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from edge_fer.messages import FrameResult


@dataclass(frozen=True)
class ClosedWindow:
    start: float
    end: float
    labels: list[str]  # one main label per contributing track; order carries no meaning
    frames: dict[str, int]  # frames per label, over all tracks: breaks a tie between labels


class AggregateWindow:
    """Feed every frame; returns a window when one closes with at least ``k_min`` tracks."""

    def __init__(self, window_s: float, k_min: int):
        self.window_s = window_s
        self.k_min = k_min
        self._start: float | None = None
        self._frames: dict[str, Counter[str]] = {}

    def add(self, result: FrameResult) -> ClosedWindow | None:
        start = math.floor(result.timestamp / self.window_s) * self.window_s
        closed = None
        if self._start is None:
            self._start = start
        elif start != self._start:  # a wall clock stepped back also closes it, or it would run long
            closed = self._close(self._start)
            self._start, self._frames = start, {}
        for face in result.faces:
            self._frames.setdefault(face.track_id, Counter())[face.label] += 1
        return closed

    def _close(self, start: float) -> ClosedWindow | None:
        if len(self._frames) < self.k_min:
            return None
        labels = [frames.most_common(1)[0][0] for frames in self._frames.values()]
        return ClosedWindow(start, start + self.window_s, labels, dict(sum(self._frames.values(), Counter())))
