"""Give faces ephemeral track ids and steady labels.

IoU matching frame to frame; per track an exponential moving average of the class
probabilities, and hysteresis: a new label takes over only when it leads the current one by a
margin for a hold time. Label flicker is the most common complaint about FER on video.
A frame whose faces were not classified (``classifier.max_rate_hz``) still moves and keeps the
tracks; the average and the label hold advance only with real probabilities, by the time since the last ones.
Ids are random (``secrets``), never derived from the face, and forgotten when the face leaves.
"""
from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import numpy as np

from edge_fer.messages import UNCERTAIN, TrackedFace, TrackEvent

TRACK_ID_BYTES = 8
"""64 random bits: a repeat within a device's lifetime is astronomically unlikely."""
CONFIRM_HITS = 2
"""A track is reported from its second matched detection on: one-frame false positives of the
detector then never reach the sinks as appeared/gone pairs."""


@dataclass(frozen=True)
class TrackerSettings:
    """Every threshold of tracking and smoothing, in seconds or probabilities (config [tracker])."""

    iou_match: float = 0.3  # common IoU gate of SORT-style trackers (Bewley et al. 2016)
    max_missed_s: float = 1.0  # a face unseen this long is gone (blinks, head turns last < 1 s)
    smoothing_s: float = 0.5  # EMA time constant: about 8 frames at 15 fps
    switch_margin: float = 0.15  # a new label must lead the current one by this probability
    switch_hold_s: float = 0.4  # ... continuously for this long
    uncertain_below: float = 0.45  # smoothed top probability under this reports ``uncertain``
    # Leaving ``uncertain`` needs the floor plus this. A face whose top probability is N(0.46, 0.08)
    # frame to frame at 15 fps changed label 20.5 times a minute without it, 1.5 with it
    # (tests/test_track.py, _changes_per_minute, over 2 minutes).
    uncertain_margin: float = 0.05


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


@dataclass
class _Track:
    track_id: str
    box: tuple[float, float, float, float]
    probs: np.ndarray
    first_seen: float
    last_seen: float
    classified_at: float
    hits: int = 1
    label: str = UNCERTAIN
    candidate: str | None = None
    candidate_since: float = 0.0
    confirmed: bool = False


class Tracker:
    """``update`` once per frame with the frame's boxes and probabilities, in the same order."""

    def __init__(self, labels: tuple[str, ...], settings: TrackerSettings = TrackerSettings()):
        self.labels = labels
        self.settings = settings
        self._tracks: list[_Track] = []

    def _desired(self, probs: np.ndarray, current: str | None = None) -> str:
        """The label the probabilities ask for. The floor is higher for a face that is
        ``uncertain`` now: a probability hovering at the floor would otherwise flip it in and out."""
        k = int(probs.argmax())
        floor = self.settings.uncertain_below + (self.settings.uncertain_margin if current == UNCERTAIN else 0.0)
        return self.labels[k] if probs[k] >= floor else UNCERTAIN

    def _prob(self, track: _Track, label: str) -> float:
        return float(track.probs.max()) if label == UNCERTAIN else float(track.probs[self.labels.index(label)])

    def _leads(self, track: _Track, new: str) -> bool:
        """Uncertainty is decided by its floor (``_desired``); two real labels also need the margin."""
        if UNCERTAIN in (new, track.label):
            return True
        return self._prob(track, new) - self._prob(track, track.label) >= self.settings.switch_margin

    def _smooth(self, track: _Track, probs: np.ndarray | None, now: float, wall: float) -> TrackEvent | None:
        if probs is None:  # nothing new: the hold must be confirmed by a classified frame, as on a slower camera
            return None
        s = self.settings
        dt = now - track.classified_at
        alpha = 1.0 if s.smoothing_s <= 0 else 1.0 - math.exp(-dt / s.smoothing_s)
        track.probs = track.probs + alpha * (probs - track.probs)
        track.classified_at = now
        desired = self._desired(track.probs, track.label)
        if desired == track.label or not self._leads(track, desired):
            track.candidate = None
            return None
        if track.candidate != desired:
            track.candidate, track.candidate_since = desired, now
        if now - track.candidate_since < s.switch_hold_s:
            return None
        previous, track.label, track.candidate = track.label, desired, None
        if not track.confirmed:
            return None
        return TrackEvent("changed", track.track_id, desired, round(self._prob(track, desired), 4), previous, wall)

    def update(self, boxes: list[tuple[float, float, float, float]], probs: list[np.ndarray | None],
               now: float, wall: float) -> tuple[list[TrackedFace], list[TrackEvent]]:
        """``now``: monotonic seconds of the frame; ``wall``: its wall-clock time for events.
        ``probs[i]`` is None for a face this frame did not classify: it only moves its track."""
        events: list[TrackEvent] = []
        pairs = sorted(((iou(t.box, b), ti, bi) for ti, t in enumerate(self._tracks) for bi, b in enumerate(boxes)),
                       reverse=True)
        used_t, used_b = set(), set()
        for overlap, ti, bi in pairs:
            if overlap < self.settings.iou_match:
                break
            if ti in used_t or bi in used_b:
                continue
            used_t.add(ti)
            used_b.add(bi)
            track = self._tracks[ti]
            event = self._smooth(track, probs[bi], now, wall)
            track.box, track.last_seen, track.hits = boxes[bi], now, track.hits + 1
            if event:
                events.append(event)
            if not track.confirmed and track.hits >= CONFIRM_HITS:
                track.confirmed = True
                events.append(TrackEvent("appeared", track.track_id, track.label,
                                         round(self._prob(track, track.label), 4), None, wall))
        for bi, box in enumerate(boxes):
            if bi not in used_b and probs[bi] is not None:  # an unclassified newcomer waits for its first label
                track = _Track(secrets.token_hex(TRACK_ID_BYTES), box, probs[bi].astype(np.float32), now, now, now)
                track.label = self._desired(track.probs)
                self._tracks.append(track)
        alive = []
        for track in self._tracks:
            if now - track.last_seen > self.settings.max_missed_s:
                if track.confirmed:
                    events.append(TrackEvent("gone", track.track_id, track.label,
                                             round(self._prob(track, track.label), 4), None, wall,
                                             duration_s=round(track.last_seen - track.first_seen, 3)))
            else:
                alive.append(track)
        self._tracks = alive
        # A face the detector missed for less than max_missed_s is still there: counting only this
        # frame's detections would flip the retained state (and Home Assistant's presence) on a blink.
        faces = [TrackedFace(t.track_id, t.label, round(self._prob(t, t.label), 4))
                 for t in self._tracks if t.confirmed]
        return faces, events

    def excuse(self, seconds: float) -> None:
        """Time the camera showed nothing (covered, shorter than a lost picture) is not time the
        faces were away: without this, a face covered for most of max_missed_s was "gone" on its
        first frame back."""
        for track in self._tracks:
            track.last_seen += seconds

    def clear(self, wall: float) -> list[TrackEvent]:
        """End every track (shutdown, source lost): their ``gone`` events, ids forgotten."""
        events = [TrackEvent("gone", t.track_id, t.label, round(self._prob(t, t.label), 4), None, wall,
                             duration_s=round(t.last_seen - t.first_seen, 3)) for t in self._tracks if t.confirmed]
        self._tracks = []
        return events
