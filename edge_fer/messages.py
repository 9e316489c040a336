"""Typed records passed from the per-frame step to the sinks.

Nothing here can hold pixels, boxes, landmarks or embeddings: a track is known to the sinks
only by a random ephemeral id and its smoothed label. The pipeline keeps boxes internally for
tracking and never puts them in these records.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

UNCERTAIN = "uncertain"
"""Label of a face whose smoothed best probability is below the confidence floor."""

EventKind = Literal["appeared", "changed", "gone"]


@dataclass(frozen=True)
class TrackedFace:
    """A face present in this frame, as the sinks may see it."""

    track_id: str  # random, ephemeral (uuid4 hex prefix); never derived from the face
    label: str  # one of edge_fer.LABELS or UNCERTAIN, after smoothing and hysteresis
    confidence: float  # smoothed probability of ``label`` (of the top class when uncertain)


@dataclass(frozen=True)
class TrackEvent:
    """One change of a track: a new face, a label change, or a face gone."""

    kind: EventKind
    track_id: str
    label: str
    confidence: float
    previous_label: str | None  # set for "changed"; None otherwise
    timestamp: float  # wall-clock seconds (time.time()) of the frame that caused it
    duration_s: float = 0.0  # seconds the track had been visible, for "gone"


@dataclass(frozen=True)
class FrameResult:
    """What one frame produced: the faces now present and the events they caused."""

    timestamp: float  # wall clock
    faces: list[TrackedFace] = field(default_factory=list)
    events: list[TrackEvent] = field(default_factory=list)
    detected: int = 0  # faces the detector found, confirmed or not (never published)


@dataclass(frozen=True)
class PipelineStats:
    """Periodic health figures of the pipeline (published on the stats topic)."""

    fps: float
    frames: int
    dropped_frames: int
    inference_ms: float  # mean classify time per frame whose faces were classified, over the stats window
    detect_ms: float
    uptime_s: float
    interpreter: str  # backend package in use
