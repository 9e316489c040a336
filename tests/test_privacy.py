"""Privacy guarantees: what each mode lets out, and that nothing but bounded labels can."""
from __future__ import annotations

import os
from typing import Any
from collections.abc import Iterator

import jsonschema
import pytest

from edge_fer import LABELS
from edge_fer.config import load_config
from edge_fer.messages import FrameResult, PipelineStats, TrackedFace, TrackEvent
from edge_fer.publish import SCHEMA_KINDS, MemorySink, load_schema
from edge_fer.publish._payloads import MAX_STRING_LEN
from edge_fer.publish._stream import MessageStream

T0 = 1_700_000_040.0  # a multiple of the default window, so windows start at T0
DT = 1 / 15
FORBIDDEN_KEYS = {"box", "bbox", "boxes", "x", "y", "w", "h", "landmarks", "keypoints", "embedding", "pixels",
                  "image", "frame", "crop", "face", "identity", "person", "probabilities"}
MAX_ARRAY_LEN = len(LABELS) + 2  # discovery's enum options: the labels, uncertain, none


def make_cfg(mode: str, **overrides: Any):
    return load_config(os.devnull, {"privacy.mode": mode, "homeassistant.discovery": True,
                                    "mqtt.device_id": "cabin", **overrides}, {})


def crowd(n_tracks: int, window_s: float, labels: list[str] | None = None) -> Iterator[FrameResult]:
    """``n_tracks`` faces, one after another, within one window, then a frame in the next window."""
    per_track = window_s / (n_tracks + 1)
    for k in range(n_tracks):
        tid = f"t{k:04d}"
        label = (labels or LABELS)[k % len(labels or LABELS)]
        t = T0 + k * per_track
        yield FrameResult(t, [TrackedFace(tid, label, 0.9)], [TrackEvent("appeared", tid, label, 0.9, None, t)])
        yield FrameResult(t + DT, [TrackedFace(tid, label, 0.9)])
    yield FrameResult(T0 + window_s + DT, [])


def run(cfg, frames) -> list:
    sink = MemorySink(cfg)
    sink.start()
    sink.announce()  # as the daemon does at its first frame
    for frame in frames:
        sink.publish_frame(frame)
    sink.publish_stats(PipelineStats(15.0, 100, 0, 8.0, 4.0, 10.0, "ai-edge-litert"))
    sink.stop()
    return sink.messages


def test_aggregate_mode_publishes_nothing_below_k_min():
    cfg = make_cfg("aggregate")
    messages = run(cfg, crowd(cfg.privacy.k_min - 1, cfg.privacy.aggregate_window_s))
    assert {m.kind for m in messages} == {"available", "discovery", "discovery_removal", "stats"}


def test_aggregate_mode_publishes_window_counts_from_k_min_tracks_on():
    cfg = make_cfg("aggregate")
    labels = ["happiness", "happiness", "neutral"]
    messages = run(cfg, crowd(cfg.privacy.k_min, cfg.privacy.aggregate_window_s, labels))
    windows = [m for m in messages if m.kind == "aggregate"]
    assert len(windows) == 1 and not [m for m in messages if m.kind in ("expression", "state")]
    payload = windows[0].payload
    assert payload["tracks"] == cfg.privacy.k_min and sum(payload["counts"].values()) == cfg.privacy.k_min
    assert payload["dominant"] == "happiness"
    assert payload["window_start"] == "2023-11-14T22:14:00.000Z" and payload["window_end"] == "2023-11-14T22:15:00.000Z"
    assert not any(str(v).startswith("t0") for v in payload.values())  # no track ids


def test_a_window_below_k_min_is_discarded_not_carried_over():
    """PRIVACY.md: a window with fewer than k_min distinct faces is discarded, not carried over: its
    faces must not help the next window reach k_min, nor be counted in a window that is released."""
    cfg = make_cfg("aggregate")
    k, window_s = cfg.privacy.k_min, cfg.privacy.aggregate_window_s
    t1, t2 = T0 + window_s, T0 + 2 * window_s

    def faces(ids: list[str], start: float) -> list[FrameResult]:
        return [FrameResult(start + i * DT, [TrackedFace(tid, "happiness", 0.9) for tid in ids]) for i in range(3)]

    frames = faces([f"a{i}" for i in range(k - 1)], T0)  # one short of k_min
    frames += faces(["b0"], t1)  # with the last window's faces it would make k_min
    frames += faces([f"c{i}" for i in range(k)], t2)  # k_min on its own
    messages = run(cfg, frames + [FrameResult(T0 + 3 * window_s, [])])
    windows = [m.payload for m in messages if m.kind == "aggregate"]
    assert [(w["window_start"], w["tracks"]) for w in windows] == [("2023-11-14T22:16:00.000Z", k)]
    assert sum(windows[0]["counts"].values()) == k


def test_aggregate_counts_each_track_once_by_its_main_label():
    cfg = make_cfg("aggregate", **{"privacy.k_min": 1})
    labels = ["neutral"] * 8 + ["happiness"] * 2
    frames = [FrameResult(T0 + i * DT, [TrackedFace("a1", label, 0.9)]) for i, label in enumerate(labels)]
    messages = run(cfg, frames + [FrameResult(T0 + cfg.privacy.aggregate_window_s, [])])
    (window,) = [m.payload for m in messages if m.kind == "aggregate"]
    assert window["tracks"] == 1 and window["counts"]["neutral"] == 1 and window["counts"]["happiness"] == 0


def test_aggregate_tie_goes_to_the_label_seen_longer_not_to_the_first_in_order():
    cfg = make_cfg("aggregate", **{"privacy.k_min": 2})
    frames = [FrameResult(T0 + i * DT, [TrackedFace("a1", "anger", 0.9), TrackedFace("b2", "neutral", 0.9)])
              for i in range(3)]
    frames += [FrameResult(T0 + (3 + i) * DT, [TrackedFace("b2", "neutral", 0.9)]) for i in range(3)]
    messages = run(cfg, frames + [FrameResult(T0 + cfg.privacy.aggregate_window_s, [])])
    (window,) = [m.payload for m in messages if m.kind == "aggregate"]
    assert window["counts"]["anger"] == window["counts"]["neutral"] == 1
    assert window["dominant"] == "neutral"


def test_a_wall_clock_stepped_back_closes_the_aggregate_window():
    """Or the open window would keep filling until the clock caught up with it, minutes later."""
    cfg = make_cfg("aggregate", **{"privacy.k_min": 1})
    face = [TrackedFace("a1", "happiness", 0.9)]
    messages = run(cfg, [FrameResult(T0, face), FrameResult(T0 + DT, face), FrameResult(T0 - 300, face)])
    (window,) = [m.payload for m in messages if m.kind == "aggregate"]
    assert window["counts"]["happiness"] == 1


@pytest.mark.parametrize("mode", ["labels", "presence", "aggregate"])
def test_aggregate_mode_health_does_not_tell_whether_a_face_was_there(mode):
    """Below k_min nothing may tell presence: not stats' classify time (0 exactly when no face was
    classified), not systemd's STATUS= line, which any local user reads with `systemctl status`
    (the text here; what a running daemon sends over NOTIFY_SOCKET: test_faults.py,
    test_aggregate_mode_status_line_shows_no_face_count)."""
    from edge_fer.service import Daemon

    cfg = make_cfg(mode)
    stats = [m.payload for m in run(cfg, crowd(1, cfg.privacy.aggregate_window_s)) if m.kind == "stats"]
    assert stats and all(("inference_ms" in s) == (mode != "aggregate") for s in stats)
    assert ("faces=" in Daemon(cfg)._status_text(15.0, 1)) == (mode != "aggregate")


def test_presence_mode_only_counts_faces():
    cfg = make_cfg("presence")
    messages = run(cfg, crowd(3, 60.0))
    assert {m.kind for m in messages} == {"available", "discovery", "discovery_removal", "state", "stats"}
    for m in messages:
        if m.kind == "state":
            assert set(m.payload) == {"schema", "seq", "ts", "mode", "faces", "present", "updated_at"}
        assert not set(LABELS) & set(map(str, leaves(m.payload)))


def leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for v in value.values():
            yield from leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from leaves(v)
    else:
        yield value


def walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk(v, f"{path}[{i}]")


@pytest.mark.parametrize("mode", ["labels", "aggregate", "presence"])
def test_every_payload_is_schema_valid_bounded_and_free_of_image_data(mode):
    cfg = make_cfg(mode, **{"privacy.k_min": 2})
    for m in run(cfg, crowd(4, cfg.privacy.aggregate_window_s)):
        jsonschema.validate(m.payload, load_schema(m.kind), cls=jsonschema.Draft202012Validator)
        for path, value in walk(m.payload):
            assert path.rsplit(".", 1)[-1] not in FORBIDDEN_KEYS, (m.topic, path)
            if isinstance(value, str) and m.kind != "discovery":
                assert len(value) <= MAX_STRING_LEN, (m.topic, path)
            if isinstance(value, list):
                assert len(value) <= MAX_ARRAY_LEN, (m.topic, path)


@pytest.mark.parametrize("kind", SCHEMA_KINDS)
def test_schemas_close_every_object_and_bound_every_string(kind):
    """No schema can let an extra field (or a long string) carry pixels out of the device."""
    schema = load_schema(kind)
    jsonschema.Draft202012Validator.check_schema(schema)
    for path, node in walk(schema):
        if not isinstance(node, dict) or path.endswith(("properties", "$defs")):
            continue
        if node.get("type") == "object":
            assert node.get("additionalProperties") is False, path
        types = node.get("type") if isinstance(node.get("type"), list) else [node.get("type")]
        if "string" in types:
            assert "maxLength" in node or "pattern" in node, path
        if "array" in types:
            assert node.get("maxItems", MAX_ARRAY_LEN + 1) <= MAX_ARRAY_LEN, path
        assert "contentEncoding" not in node and "contentMediaType" not in node, path


def test_schema_enums_match_the_label_set():
    expression = load_schema("expression")["properties"]
    assert expression["label"]["enum"] == [*LABELS, "uncertain"]
    assert load_schema("state")["properties"]["dominant"]["enum"] == [*LABELS, "uncertain", "none"]


@pytest.mark.parametrize("face, event", [
    (TrackedFace("a1", "joy", 0.9), None),
    (TrackedFace("a1", "neutral", 0.9), TrackEvent("appeared", "x" * 33, "neutral", 0.9, None, T0)),
    (TrackedFace("a1", "neutral", 0.9), TrackEvent("appeared", "name: Jane Doe", "neutral", 0.9, None, T0)),
    (TrackedFace("a1", "neutral", 0.9), TrackEvent("changed", "a1", "neutral", 0.9, "data:image/png;base64,AAAA", T0)),
])
def test_strings_outside_the_contract_are_refused(face, event):
    stream = MessageStream(make_cfg("labels"))
    with pytest.raises(ValueError):
        stream.frame(FrameResult(T0, [face], [event] if event else []))


def test_retained_snapshots_expire_on_the_broker():
    for mode in ("labels", "aggregate"):
        cfg = make_cfg(mode, **{"privacy.k_min": 1})
        retained = [m for m in run(cfg, crowd(2, cfg.privacy.aggregate_window_s)) if m.kind in ("state", "aggregate")]
        assert retained and all(m.retain and m.expiry_s for m in retained)
