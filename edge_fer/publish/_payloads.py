"""Pure builders of every message edge-fer publishes: (topic, payload, retain, qos), no I/O.

Both sinks share them, so stdout shows exactly what MQTT would carry. Each payload has
``schema`` (its version), ``ts`` (ISO 8601 UTC, millisecond precision, ``Z`` suffix) and ``seq``
(one per-device counter across all topics, starting at 1 when the daemon starts: a gap means
messages were lost, a drop means the daemon restarted). Labels and track ids are checked
against their contract here, so nothing else can ride along in a string.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, UTC
from typing import Any
from collections.abc import Mapping, Sequence

from edge_fer import LABELS
from edge_fer.messages import UNCERTAIN, PipelineStats, TrackedFace, TrackEvent

SCHEMA_VERSION = 1
QOS = 1
"""Every topic at QoS 1: together with the sink's buffer, a consumer sees every ``seq``."""
MAX_STRING_LEN = 64
"""No free-text field may be longer; labels and ids are far shorter."""
NO_FACE = "none"
STATE_LABELS = (*LABELS, UNCERTAIN)
EXPRESSION_OPTIONS = (*STATE_LABELS, NO_FACE)
TRACK_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
CONFIDENCE_DIGITS = 3
MS_DIGITS = 2
SECONDS_DIGITS = 2

ONLINE, STOPPED, OFFLINE = "online", "stopped", "offline"
NO_PICTURE = "no_picture"
"""available while the camera gives no picture: running, but blind. Not "online" with no face: a
covered in-car camera must not read as "driver absent"."""
NO_PICTURE_REASON = "no picture from the camera"
BLANK_PICTURE_REASON = "the camera shows nothing (covered or dark)"
"""available=no_picture's reason when frames come but show nothing (edge_fer.blank)."""


@dataclass(frozen=True)
class Message:
    """One MQTT message. ``kind`` names its JSON schema; ``expiry_s`` is the MQTT v5 message
    expiry, set on retained snapshots so a broker forgets them once they are stale. A ``None``
    payload is sent empty: retained, it deletes the broker's retained copy on that topic."""

    kind: str
    topic: str
    payload: dict[str, Any] | None
    retain: bool
    qos: int = QOS
    expiry_s: int | None = None


@dataclass(frozen=True)
class Topics:
    """The topics of one device: ``<prefix>/<device_id>/<name>``."""

    base: str

    @classmethod
    def of(cls, prefix: str, device_id: str) -> Topics:
        return cls(f"{prefix}/{device_id}")

    @property
    def available(self) -> str:
        return f"{self.base}/available"

    @property
    def expression(self) -> str:
        return f"{self.base}/expression"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def aggregate(self) -> str:
        return f"{self.base}/aggregate"

    @property
    def stats(self) -> str:
        return f"{self.base}/stats"


@dataclass(frozen=True)
class SinkCounters:
    """The sink's own health, reported on the stats topic."""

    buffered: int  # messages waiting for delivery
    buffer_dropped: int  # oldest messages dropped because the buffer was full, since start
    connected: bool


def iso_ts(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _label(label: str) -> str:
    if label not in STATE_LABELS:
        raise ValueError(f"label {label!r} is not one of {STATE_LABELS}")
    return label


def _track_id(track_id: str) -> str:
    if not TRACK_ID_RE.fullmatch(track_id):
        raise ValueError(f"track id {track_id!r} must match {TRACK_ID_RE.pattern}")
    return track_id


def _head(seq: int, ts: float) -> dict[str, Any]:
    return {"schema": SCHEMA_VERSION, "seq": seq, "ts": iso_ts(ts)}


def available(topics: Topics, status: str, seq: int, ts: float, reason: str | None = None) -> Message:
    payload = {**_head(seq, ts), "status": status}
    if reason is not None:
        payload["reason"] = reason[:MAX_STRING_LEN]
    return Message("available", topics.available, payload, retain=True)


def last_will(topics: Topics) -> Message:
    """Published by the broker when the connection dies: it has no ``seq`` (it is outside the
    device's sequence) and no ``ts`` (the broker decides when)."""
    payload = {"schema": SCHEMA_VERSION, "seq": None, "ts": None, "status": OFFLINE}
    return Message("available", topics.available, payload, retain=True)


def expression(topics: Topics, event: TrackEvent, seq: int) -> Message:
    payload = {
        **_head(seq, event.timestamp),
        "event": event.kind,
        "track": _track_id(event.track_id),
        "label": _label(event.label),
        "confidence": round(float(event.confidence), CONFIDENCE_DIGITS),
        "previous": None if event.previous_label is None else _label(event.previous_label),
        "duration_s": round(float(event.duration_s), SECONDS_DIGITS),
    }
    return Message("expression", topics.expression, payload, retain=False)


def dominant(faces: Sequence[TrackedFace], previous: str | None = None) -> str:
    """Most frequent label among the faces. On a tie the previous frame's pick stays while it is
    still among the most frequent, else the larger summed confidence wins: two faces with
    different labels are always tied, and their confidences swap order from frame to frame (each
    face's mirror view is classified every other time), so confidence alone flipped the retained
    state on every classified frame."""
    if not faces:
        return NO_FACE
    score = {label: (0, 0.0) for label in STATE_LABELS}
    for face in faces:
        n, conf = score[_label(face.label)]
        score[face.label] = (n + 1, conf + face.confidence)
    top = max(n for n, _ in score.values())
    if previous in score and score[previous][0] == top:
        return previous
    return max(STATE_LABELS, key=lambda label: score[label])


def state_content(faces: Sequence[TrackedFace], with_labels: bool, previous_dominant: str | None = None) -> dict[str, Any]:
    """What the state topic says about these faces; compared frame to frame to detect change."""
    content: dict[str, Any] = {"mode": "labels" if with_labels else "presence",
                               "faces": len(faces), "present": bool(faces)}
    if with_labels:
        content["dominant"] = dominant(faces, previous_dominant)
        content["counts"] = {label: sum(f.label == label for f in faces) for label in STATE_LABELS}
    return content


def state(topics: Topics, content: Mapping[str, Any], seq: int, ts: float, updated_at: float,
          expiry_s: int) -> Message:
    payload = {**_head(seq, ts), **content, "updated_at": iso_ts(updated_at)}
    return Message("state", topics.state, payload, retain=True, expiry_s=expiry_s)


def aggregate(topics: Topics, start: float, end: float, label_of_track: Sequence[str],
              frames_of_label: Mapping[str, int], seq: int, ts: float, expiry_s: int) -> Message:
    """Counts of tracks per label over one window (each track counted once, by its main label);
    ``dominant`` has the most tracks and, on a tie, the most frames (not the first label in order,
    which would favour anger)."""
    counts = {label: sum(_label(t) == label for t in label_of_track) for label in STATE_LABELS}
    payload = {
        **_head(seq, ts),
        "window_start": iso_ts(start),
        "window_end": iso_ts(end),
        "tracks": len(label_of_track),
        "dominant": max(STATE_LABELS, key=lambda label: (counts[label], frames_of_label.get(label, 0))),
        "counts": counts,
    }
    return Message("aggregate", topics.aggregate, payload, retain=True, expiry_s=expiry_s)


def stats(topics: Topics, pipeline: PipelineStats, sink: SinkCounters, privacy: str, seq: int,
          ts: float) -> Message:
    payload = {
        **_head(seq, ts),
        "privacy": privacy,
        "fps": round(pipeline.fps, MS_DIGITS),
        "frames": pipeline.frames,
        "dropped_frames": pipeline.dropped_frames,
        # Aggregate mode: 0 or not tells whether a face was classified, below k_min too.
        **({} if privacy == "aggregate" else {"inference_ms": round(pipeline.inference_ms, MS_DIGITS)}),
        "detect_ms": round(pipeline.detect_ms, MS_DIGITS),
        "uptime_s": round(pipeline.uptime_s, SECONDS_DIGITS),
        "interpreter": pipeline.interpreter[:MAX_STRING_LEN],
        "buffered": sink.buffered,
        "buffer_dropped": sink.buffer_dropped,
        "connected": sink.connected,
    }
    return Message("stats", topics.stats, payload, retain=False)
