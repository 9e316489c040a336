"""Message building and the brokerless sinks: what is published, when, in which order."""
from __future__ import annotations

import io
import json
import os
import threading
import time

import jsonschema
import pytest

import edge_fer.publish as publish
from edge_fer import LABELS
from edge_fer.config import load_config
from edge_fer.messages import UNCERTAIN, FrameResult, PipelineStats, TrackedFace, TrackEvent
from edge_fer.publish import MemorySink, Message, MqttSink, StdoutSink, build_sink, load_schema
from edge_fer.publish._discovery import AVAILABILITY_TEMPLATE
from edge_fer.publish._outbox import Outbox
from edge_fer.publish._payloads import dominant, iso_ts
from edge_fer.publish._stream import AGGREGATE_EXPIRY_WINDOWS, STATE_EXPIRY_HEARTBEATS, MessageStream

T0 = 1_700_000_000.0
DT = 1 / 15
LIVENESS_S = 30.0  # a generous bound for "it returned at all": not a speed target
STATS = PipelineStats(fps=14.9, frames=900, dropped_frames=3, inference_ms=8.25, detect_ms=4.5, uptime_s=60.0,
                      interpreter="ai-edge-litert")


def make_cfg(**overrides):
    """``make_cfg(mqtt__port=1)`` sets mqtt.port."""
    dotted = {k.replace("__", "."): v for k, v in overrides.items()}
    return load_config(os.devnull, {"mqtt.device_id": "kiosk-1", **dotted}, {})


def validate(message: Message) -> None:
    jsonschema.validate(message.payload, load_schema(message.kind), cls=jsonschema.Draft202012Validator)


def appeared(tid: str, label: str, t: float) -> TrackEvent:
    return TrackEvent("appeared", tid, label, 0.8, None, t)


def test_exports_are_pinned():
    assert sorted(publish.__all__) == sorted(["Sink", "MqttSink", "StdoutSink", "MemorySink", "Message", "Topics",
                                              "build_sink", "load_schema", "SCHEMA_KINDS", "NO_PICTURE_REASON",
                                              "BLANK_PICTURE_REASON"])


def test_labels_mode_sends_events_and_state_in_one_sequence():
    stream = MessageStream(make_cfg(), clock=lambda: T0)
    a_happy = TrackedFace("a1", "happiness", 0.9)
    out = stream.frame(FrameResult(T0, [a_happy], [appeared("a1", "happiness", T0)]))
    out += stream.frame(FrameResult(T0 + DT, [a_happy]))  # nothing changed, no heartbeat due
    a_sad = TrackedFace("a1", "sadness", 0.7)
    out += stream.frame(FrameResult(T0 + 2 * DT, [a_sad], [TrackEvent("changed", "a1", "sadness", 0.7, "happiness",
                                                                      T0 + 2 * DT)]))
    gone = TrackEvent("gone", "a1", "sadness", 0.7, None, T0 + 3 * DT, 0.2)
    out += stream.frame(FrameResult(T0 + 3 * DT, [], [gone]))
    out += stream.stats(STATS, publish._payloads.SinkCounters(0, 0, True))
    assert [m.kind for m in out] == ["expression", "state", "expression", "state", "expression", "state", "stats"]
    assert [m.payload["seq"] for m in out] == list(range(1, 8))
    for m in out:
        validate(m)
    assert out[2].payload | {"seq": 0, "ts": ""} == {
        "schema": 1, "seq": 0, "ts": "", "event": "changed", "track": "a1", "label": "sadness",
        "confidence": 0.7, "previous": "happiness", "duration_s": 0.0}
    assert out[5].payload["dominant"] == "none" and out[5].payload["faces"] == 0
    assert out[1].payload["counts"] == {**{label: 0 for label in LABELS}, UNCERTAIN: 0, "happiness": 1}
    assert out[1].retain and not out[0].retain and all(m.qos == 1 for m in out)


def test_unchanged_state_is_resent_as_heartbeat():
    cfg = make_cfg(mqtt__state_heartbeat_s=2.0)
    stream = MessageStream(cfg)
    frames = int(cfg.mqtt.state_heartbeat_s / DT) + 2
    face = [TrackedFace("a1", "neutral", 0.9)]
    sent = [i for i in range(frames) if stream.frame(FrameResult(T0 + i * DT, face))]
    first_beat = next(i for i in range(frames) if i * DT >= cfg.mqtt.state_heartbeat_s)
    assert sent == [0, first_beat]


def test_a_wall_clock_stepped_back_does_not_hold_back_the_heartbeat():
    """NTP correcting a Pi without a real-time clock: the retained state must not expire meanwhile."""
    cfg = make_cfg(mqtt__state_heartbeat_s=2.0)
    stream = MessageStream(cfg)
    face = [TrackedFace("a1", "neutral", 0.9)]
    assert stream.frame(FrameResult(T0, face))
    stepped = T0 - 300
    sent = [i for i in range(int(cfg.mqtt.state_heartbeat_s / DT) + 2) if stream.frame(FrameResult(stepped + i * DT, face))]
    assert sent and sent[0] * DT < cfg.mqtt.state_heartbeat_s, sent


def test_state_updated_at_is_the_last_change_and_retained_state_expires():
    cfg = make_cfg()
    stream = MessageStream(cfg)
    face = [TrackedFace("a1", "neutral", 0.9)]
    first = stream.frame(FrameResult(T0, face))[0]
    beat = stream.frame(FrameResult(T0 + cfg.mqtt.state_heartbeat_s, face))[0]
    assert beat.payload["updated_at"] == first.payload["updated_at"] == iso_ts(T0)
    assert beat.payload["ts"] == iso_ts(T0 + cfg.mqtt.state_heartbeat_s)
    assert beat.expiry_s == cfg.mqtt.state_heartbeat_s * STATE_EXPIRY_HEARTBEATS


def test_dominant_is_the_most_frequent_label_then_the_most_confident():
    faces = [TrackedFace("a", "happiness", 0.6), TrackedFace("b", "neutral", 0.9), TrackedFace("c", "happiness", 0.5)]
    assert dominant(faces) == "happiness"
    assert dominant(faces[:2]) == "neutral"
    assert dominant([]) == "none"


def test_two_faces_with_different_labels_do_not_flip_the_state_as_their_confidences_swap():
    """A driver and a passenger, happy and sad: each face's label is steady, but the mirrored view
    every other frame swaps which one is more confident. The state must not change with it."""
    stream = MessageStream(make_cfg())
    states = []
    for i in range(20):
        happy, sad = (0.7, 0.6) if i % 2 else (0.6, 0.7)
        faces = [TrackedFace("a1", "happiness", happy), TrackedFace("b2", "sadness", sad)]
        states += [m.payload["dominant"] for m in stream.frame(FrameResult(T0 + i * 0.2, faces)) if m.kind == "state"]
    assert states == ["sadness"]  # the first frame's pick, once: no flip, no new retained message
    # A third face breaks the tie: the majority wins at once, and holds.
    faces = [TrackedFace("a1", "happiness", 0.6), TrackedFace("b2", "sadness", 0.9), TrackedFace("c3", "happiness", 0.5)]
    assert [m.payload["dominant"] for m in stream.frame(FrameResult(T0 + 5, faces)) if m.kind == "state"] == ["happiness"]


@pytest.mark.parametrize("mode", ["labels", "presence", "aggregate"])
def test_a_lost_picture_says_no_picture_ends_the_faces_and_claims_no_state(mode):
    stream = MessageStream(make_cfg(privacy__mode=mode))
    face = [TrackedFace("a1", "fear", 0.8)]
    stream.frame(FrameResult(T0, face, [appeared("a1", "fear", T0)]))
    gone = TrackEvent("gone", "a1", "fear", 0.8, None, T0 + 2, duration_s=2.0)
    lost = stream.picture_lost(FrameResult(T0 + 2, [], [gone]), publish.NO_PICTURE_REASON)
    assert lost[0].kind == "available" and lost[0].payload["status"] == "no_picture"
    assert lost[0].retain and lost[0].payload["reason"] == "no picture from the camera"
    assert [m.kind for m in lost[1:]] == (["expression"] if mode == "labels" else [])
    assert "state" not in {m.kind for m in lost}
    for m in lost:
        validate(m)
    if mode != "aggregate":  # the first state after the loss goes out, even saying what it said before
        back = stream.frame(FrameResult(T0 + 3, face))
        assert [m.kind for m in back] == ["state"]


def test_the_first_state_waits_for_a_face_in_view_to_be_confirmed():
    """A face is detected on the first frame but confirmed on the second: a first state of "no
    face" would flip Home Assistant's presence off -> on at every start."""
    cfg = make_cfg()
    stream = MessageStream(cfg)
    assert stream.frame(FrameResult(T0, [], [], detected=1)) == []
    face = [TrackedFace("a1", "fear", 0.8)]
    first = stream.frame(FrameResult(T0 + DT, face, [appeared("a1", "fear", T0 + DT)], detected=1))
    assert [m.payload["faces"] for m in first if m.kind == "state"] == [1]
    # Nobody in view: "no face" is true at once. A face never confirmed is held a heartbeat at most.
    assert [m.payload["faces"] for m in MessageStream(cfg).frame(FrameResult(T0)) if m.kind == "state"] == [0]
    stuck = MessageStream(cfg)
    held = [stuck.frame(FrameResult(T0 + i * DT, [], [], detected=1)) for i in range(int(cfg.mqtt.state_heartbeat_s / DT) + 2)]
    sent = [i for i, out in enumerate(held) if out]
    assert sent and sent[0] * DT >= cfg.mqtt.state_heartbeat_s - DT, sent


def test_iso_timestamps_are_utc_milliseconds():
    assert iso_ts(0.0) == "1970-01-01T00:00:00.000Z"
    assert iso_ts(T0 + 0.1234) == "2023-11-14T22:13:20.123Z"


def test_available_and_last_will_payloads():
    stream = MessageStream(make_cfg(), clock=lambda: T0)
    online, stopped = stream.available("online") + stream.available("stopped", "source stalled")
    will = stream.last_will()
    for m in (online, stopped, will):
        validate(m)
        assert m.topic == "edge-fer/kiosk-1/available" and m.retain and m.qos == 1
    assert stopped.payload["reason"] == "source stalled"
    assert will.payload == {"schema": 1, "seq": None, "ts": None, "status": "offline"}


@pytest.mark.parametrize("mode, objects", [
    ("labels", ["sensor/expression", "sensor/faces", "binary_sensor/face_present"]),
    ("presence", ["sensor/faces", "binary_sensor/face_present"]),
    ("aggregate", ["sensor/window_expression", "sensor/window_faces"]),
])
def test_discovery_offers_only_what_the_mode_publishes_and_removes_the_rest(mode, objects):
    cfg = make_cfg(homeassistant__discovery=True, privacy__mode=mode)
    stream = MessageStream(cfg)
    messages = stream.discovery()
    configs = [m for m in messages if m.kind == "discovery"]
    topic = "homeassistant/{}/kiosk-1/{}/config".format
    assert [m.topic for m in configs] == [topic(*o.split("/")) for o in objects]
    every = {"sensor/expression", "sensor/faces", "binary_sensor/face_present", "sensor/window_expression",
             "sensor/window_faces"}
    removals = [m.topic for m in messages if m.kind == "discovery_removal"]
    # the other modes' entities, and every entity where edge-fer first put them (<device>_<object>)
    legacy = "homeassistant/{}/kiosk-1_{}/config".format
    assert sorted(removals) == sorted([topic(*o.split("/")) for o in every - set(objects)]
                                      + [legacy(*o.split("/")) for o in every])
    assert all(m.retain and m.payload is None for m in messages if m.kind == "discovery_removal")
    # the old topics first (Home Assistant lets go of the old entities before the new ids come), and once
    assert {m.topic for m in messages[:len(every)]} == {legacy(*o.split("/")) for o in every}
    assert not {legacy(*o.split("/")) for o in every} & {m.topic for m in stream.discovery()}
    for m in configs:
        validate(m)
        assert m.retain
        assert m.payload["availability_topic"] == "edge-fer/kiosk-1/available"
        assert m.payload["availability_template"] == AVAILABILITY_TEMPLATE
        assert m.payload["unique_id"].startswith("edge_fer:kiosk-1:")
        assert m.payload["device"]["identifiers"] == ["edge_fer_kiosk-1"]
        if m.payload.get("device_class") == "enum":
            assert m.payload["options"] == [*LABELS, "uncertain", "none"]
        # Unavailable when the news stops, exactly when the broker drops the retained message.
        if m.payload["state_topic"].endswith("/state"):
            assert m.payload["expire_after"] == cfg.mqtt.state_heartbeat_s * STATE_EXPIRY_HEARTBEATS
        else:
            assert m.payload["expire_after"] == cfg.privacy.aggregate_window_s * AGGREGATE_EXPIRY_WINDOWS


def test_devices_whose_ids_share_a_prefix_never_share_a_discovery_topic_or_unique_id():
    """kitchen's window_faces and kitchen_window's faces were one topic and one unique_id: each
    device's announcement removed the other's entity."""
    seen: dict[str, str] = {}
    for device, mode in [("kitchen", "aggregate"), ("kitchen_window", "labels"), ("kitchen", "labels"),
                         ("kitchen_window", "aggregate")]:
        cfg = make_cfg(homeassistant__discovery=True, privacy__mode=mode, mqtt__device_id=device)
        messages = MessageStream(cfg).discovery()
        for m in messages:
            if m.kind == "discovery":
                assert seen.setdefault(m.topic, device) == device, m.topic
                assert seen.setdefault(m.payload["unique_id"], device) == device
        kept = {m.topic for m in messages if m.kind == "discovery"}
        others = {t for t, d in seen.items() if d != device}
        assert not others & {m.topic for m in messages if m.kind == "discovery_removal"} - kept


def test_no_discovery_unless_enabled():
    assert MessageStream(make_cfg()).discovery() == []


def test_stdout_sink_writes_one_json_line_per_message():
    out = io.StringIO()
    sink = StdoutSink(make_cfg(), out=out)
    sink.start()
    sink.announce()  # as the daemon does at its first frame
    sink.publish_frame(FrameResult(T0, [TrackedFace("a1", "surprise", 0.8)], [appeared("a1", "surprise", T0)]))
    sink.publish_stats(STATS)
    sink.stop()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert all(set(line) == {"topic", "payload"} for line in lines)
    assert [line["topic"].rsplit("/", 1)[1] for line in lines] == ["available", "expression", "state", "stats",
                                                                   "available"]
    assert lines[0]["payload"]["status"] == "online" and lines[-1]["payload"]["status"] == "stopped"
    assert [line["payload"]["seq"] for line in lines] == [1, 2, 3, 4, 5]


def test_stdout_sink_stops_within_its_budget_when_nobody_reads_stdout():
    """``edge-fer run | slow-consumer``, then SIGTERM: a full pipe must not hold the stop."""
    read_end, write_end = os.pipe()
    out = os.fdopen(write_end, "w")
    sink = StdoutSink(make_cfg(mqtt__buffer_size=100_000), out=out, stop_timeout_s=0.2)
    sink.start()
    sink.announce()  # as the daemon does at its first frame
    for _ in range(2000):  # far more than a pipe buffer holds
        sink.publish_stats(STATS)
    stopper = threading.Thread(target=sink.stop, daemon=True)
    stopper.start()
    stopper.join(LIVENESS_S)
    assert not stopper.is_alive(), "stop() waited for a reader that never came"
    os.close(read_end)


def test_stdout_sink_keeps_running_when_its_reader_goes_away(caplog):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader exited: every write is EPIPE
    sink = StdoutSink(make_cfg(), out=os.fdopen(write_end, "w"))
    sink.start()
    sink.announce()  # as the daemon does at its first frame
    sink.publish_stats(STATS)
    assert sink.outbox.wait_until(lambda: not sink.connected, LIVENESS_S)
    assert sink.output_lost  # the daemon ends the run on it
    sink.publish_frame(FrameResult(T0, []))  # still returns
    sink.stop()
    assert "cannot write to stdout" in caplog.text


def test_a_replacing_sink_numbers_on_and_delivers_what_the_old_one_could_not_first():
    """Config reload while the broker is away: nothing queued is lost and seq does not restart."""
    old = MqttSink(make_cfg(mqtt__host="127.0.0.1", mqtt__port=1), stop_timeout_s=LIVENESS_S)
    old.start()
    old.announce()  # as the daemon does at its first frame
    for i in range(5):
        old.publish_frame(FrameResult(T0 + i, [TrackedFace("a1", LABELS[i], 0.9)]))
    out: list = []
    stopper = threading.Thread(target=lambda: out.append(old.stop("reload")), daemon=True)
    stopper.start()
    stopper.join(LIVENESS_S / 2)
    assert not stopper.is_alive(), "stop() waited out its drain time for a broker that is away"
    undelivered = out[0]
    new = MemorySink(make_cfg())
    new.take_over(old, undelivered)
    new.start()
    new.announce()  # as the daemon does at its first frame
    new.publish_frame(FrameResult(T0 + 9, []))
    seqs = [m.payload["seq"] for m in new.messages]
    assert seqs == list(range(1, len(seqs) + 1))
    # "online" was queued with the first frame, before the broker answered: it leads the backlog
    assert [m.kind for m in new.messages] == ["available", *["state"] * 5, "available", "available", "state"]
    assert [m.payload["status"] for m in new.messages if m.kind == "available"] == ["online", "stopped", "online"]


def test_messages_dropped_before_a_reload_still_count_after_it():
    """stats.buffer_dropped counts from start: a consumer taking differences never sees it go back."""
    old = StdoutSink(make_cfg(mqtt__buffer_size=32), out=io.StringIO())  # never started: nothing drains
    for i in range(40):
        old.publish_frame(FrameResult(T0 + i, [TrackedFace("a1", LABELS[i % 7], 0.9)]))
    undelivered = old.stop("reload")
    dropped = old.outbox.dropped
    assert dropped > 0
    out = io.StringIO()
    new = StdoutSink(make_cfg(mqtt__buffer_size=100), out=out)
    new.take_over(old, undelivered)
    new.start()
    new.announce()  # as the daemon does at its first frame
    new.publish_stats(STATS)
    new.stop()
    stats = [json.loads(line)["payload"] for line in out.getvalue().splitlines() if '/stats"' in line]
    assert [s["buffer_dropped"] for s in stats] == [dropped]


def test_memory_sink_records_the_same_messages():
    sink = MemorySink(make_cfg(homeassistant__discovery=True))
    sink.start()
    sink.announce()  # as the daemon does at its first frame
    sink.publish_frame(FrameResult(T0, [TrackedFace("a1", "fear", 0.8)], [appeared("a1", "fear", T0)]))
    sink.publish_stats(STATS)
    sink.stop("test over")
    assert [m.kind for m in sink.messages] == ["available", *["discovery_removal"] * 5, "discovery", "discovery",
                                               "discovery", *["discovery_removal"] * 2, "expression", "state", "stats",
                                               "available"]
    for m in sink.messages:
        validate(m)


def test_build_sink_picks_stdout_without_host_and_mqtt_with_one():
    assert isinstance(build_sink(make_cfg()), StdoutSink)
    assert isinstance(build_sink(make_cfg(mqtt__host="127.0.0.1")), MqttSink)


def test_outbox_drops_the_oldest_and_counts_them():
    box = Outbox(capacity=10)
    box.push(lambda: [Message("state", "t", {"seq": i}, retain=False) for i in range(25)])
    assert len(box) == 10 and box.dropped == 15
    box.close()
    assert [box.take().payload["seq"] for _ in range(10)] == list(range(15, 25))
    assert box.take() is None


def test_publish_frame_never_blocks_while_the_broker_is_unreachable():
    """A sink that waited for the broker would never finish these 2000 frames; the buffer keeps
    the newest 32, and stop hands them back instead of waiting for a broker that is away."""
    sink = MqttSink(make_cfg(mqtt__host="127.0.0.1", mqtt__port=1, mqtt__buffer_size=32))
    sink.start()
    sink.announce()  # as the daemon does at its first frame
    camera = threading.Thread(target=lambda: [sink.publish_frame(FrameResult(T0 + i * DT, [TrackedFace(
        "a1", LABELS[i % 7], 0.9)])) for i in range(2000)], daemon=True)
    camera.start()
    camera.join(LIVENESS_S)
    assert not camera.is_alive(), "publish_frame blocked while the broker was unreachable"
    sink.publish_stats(STATS)
    undelivered = sink.stop("test over")
    assert len(undelivered) == 32 and sink.outbox.dropped >= 2000 - 32
    assert [m.kind for m in undelivered[-2:]] == ["stats", "available"]
    assert undelivered[-1].payload["reason"] == "test over"
    assert sink.stop() == []  # idempotent


def test_aggregate_refuses_a_label_that_is_not_an_expression():
    from edge_fer.publish import _payloads

    topics = publish.Topics.of("edge-fer", "kiosk-1")
    assert _payloads.aggregate(topics, T0, T0 + 60, ["fear"], {}, 1, T0 + 60, 120).payload["counts"]["fear"] == 1
    with pytest.raises(ValueError, match="'joy' is not one of"):
        _payloads.aggregate(topics, T0, T0 + 60, ["joy"], {}, 1, T0 + 60, 120)
