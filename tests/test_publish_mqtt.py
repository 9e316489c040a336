"""MqttSink against a real mosquitto: topics, schemas, outages, buffer bound, will, discovery."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import jsonschema
import pytest

from edge_fer import LABELS
from edge_fer.config import Config, load_config
from edge_fer.messages import FrameResult, PipelineStats, TrackedFace, TrackEvent
from edge_fer.publish import MqttSink, load_schema
from mqtt_broker import Broker, HeldRelay, Received

REPO = Path(__file__).resolve().parents[1]
FAST_RECONNECT_S = (1, 2)
WAIT_S = 15.0
FPS = 20
STATS = PipelineStats(fps=19.8, frames=100, dropped_frames=1, inference_ms=9.1, detect_ms=5.2, uptime_s=5.0,
                      interpreter="ai-edge-litert")
MOSQUITTO_PROTOCOL = {"5": "p5", "3.1.1": "p2"}
"""How mosquitto's log names the protocol a client connected with."""
KIND_BY_TOPIC = {"available": "available", "expression": "expression", "state": "state", "stats": "stats",
                 "aggregate": "aggregate"}


@pytest.fixture
def make_cfg(mqtt_broker: Broker):
    def make(**overrides: Any) -> Config:
        return load_config(os.devnull, {
            "mqtt.host": mqtt_broker.host, "mqtt.port": mqtt_broker.port, "mqtt.device_id": "dev1",
            "mqtt.prefix": f"t{uuid.uuid4().hex[:10]}", **{k.replace("__", "."): v for k, v in overrides.items()}}, {})
    return make


@pytest.fixture
def sinks() -> Iterator[list[MqttSink]]:
    """Sinks a test made, stopped at the end (stop is idempotent)."""
    made: list[MqttSink] = []
    yield made
    for sink in made:
        sink.stop()


def open_sink(cfg: Config, sinks: list[MqttSink], **kw: Any) -> MqttSink:
    """Started, not announced, not waited for: the tests of what happens before the broker answers."""
    sink = MqttSink(cfg, reconnect_s=FAST_RECONNECT_S, **kw)
    sinks.append(sink)
    sink.start()
    return sink


def start_sink(cfg: Config, sinks: list[MqttSink], **kw: Any) -> MqttSink:
    sink = open_sink(cfg, sinks, **kw)
    sink.announce()  # as the daemon does at its first frame
    assert sink.wait_connected(WAIT_S)
    return sink


def frame(i: int, t0: float) -> FrameResult:
    """Frame ``i`` of a face whose label changes every frame: one event and one state each."""
    t = t0 + i / FPS
    label, previous = LABELS[i % len(LABELS)], LABELS[(i - 1) % len(LABELS)]
    event = TrackEvent("appeared", "f1", label, 0.9, None, t) if i == 0 else \
        TrackEvent("changed", "f1", label, 0.9, previous, t)
    return FrameResult(t, [TrackedFace("f1", label, 0.9)], [event])


def publish_for(sink: MqttSink, seconds: float, start: int, t0: float) -> int:
    """Publish frames at FPS for ``seconds`` of real time; returns the next frame index."""
    i = start
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sink.publish_frame(frame(i, t0))
        i += 1
        time.sleep(1 / FPS)
    return i


def validate(msg: Received) -> None:
    kind = KIND_BY_TOPIC[msg.topic.rsplit("/", 1)[1]]
    jsonschema.validate(msg.json, load_schema(kind), cls=jsonschema.Draft202012Validator)


def stopped(msgs: list[Received]) -> bool:
    return any(m.topic.endswith("/available") and m.json["status"] == "stopped" for m in msgs)


def seqs_in_first_arrival_order(msgs: list[Received]) -> list[int]:
    """QoS 1 may deliver a message twice after an outage; the first arrival is what counts."""
    seen: set[int] = set()
    out = []
    for m in msgs:
        seq = m.json["seq"]
        if seq is not None and seq not in seen:
            seen.add(seq)
            out.append(seq)
    return out


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_sink_publishes_every_topic_and_every_message_is_schema_valid(make_cfg, mqtt_broker, mqtt_subscriber, sinks,
                                                                     protocol):
    cfg = make_cfg(mqtt__protocol=protocol, mqtt__client_id=f"edge-fer-{uuid.uuid4().hex[:8]}")
    sub = mqtt_subscriber([f"{cfg.mqtt.prefix}/#"])
    sink = start_sink(cfg, sinks)
    t0 = time.time()
    for i in range(5):
        sink.publish_frame(frame(i, t0))
    sink.publish_frame(FrameResult(t0 + 1, [], [TrackEvent("gone", "f1", "neutral", 0.9, None, t0 + 1, 1.0)]))
    sink.publish_stats(STATS)
    sink.stop()
    assert sub.wait_for(stopped)
    for m in sub.messages:
        validate(m)
    assert {m.topic.rsplit("/", 1)[1] for m in sub.messages} == {"available", "expression", "state", "stats"}
    assert seqs_in_first_arrival_order(sub.messages) == list(range(1, len(sub.messages) + 1))
    assert [m.json["status"] for m in sub.on("available")] == ["online", "stopped"]
    stats = sub.on("stats")[0].json
    assert stats["connected"] and stats["buffer_dropped"] == 0 and stats["interpreter"] == "ai-edge-litert"
    assert f"{cfg.mqtt.client_id} ({MOSQUITTO_PROTOCOL[protocol]}, c0" in mqtt_broker.log()  # persistent session


def test_a_message_paho_refuses_is_dropped_and_logged_and_delivery_goes_on(make_cfg, mqtt_subscriber, sinks,
                                                                          caplog):
    cfg = make_cfg()
    sub = mqtt_subscriber([f"{cfg.mqtt.prefix}/#"])
    sink = start_sink(cfg, sinks)
    assert sub.wait_for(lambda msgs: len(msgs) == 1)  # online
    publish, refused = sink._client.publish, []

    def refuse_the_first(topic, *args, **kwargs):  # as paho does for a topic or payload it cannot send
        if not refused:
            refused.append(topic)
            raise ValueError("Invalid topic.")
        return publish(topic, *args, **kwargs)

    sink._client.publish = refuse_the_first
    t0 = time.time()
    for i in range(3):
        sink.publish_frame(frame(i, t0))
    sink.stop()
    assert sub.wait_for(stopped)
    assert len(refused) == 1 and "cannot publish a" in caplog.text and refused[0] in caplog.text
    delivered = [m.json["seq"] for m in sub.messages]
    assert len(delivered) == delivered[-1] - 1  # all but the refused one, stopped included


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_broker_outage_loses_nothing_and_keeps_order(make_cfg, mqtt_broker, mqtt_subscriber, sinks, protocol):
    cfg = make_cfg(mqtt__protocol=protocol)
    sub = mqtt_subscriber([f"{cfg.mqtt.prefix}/#"], persistent=True)
    sink = start_sink(cfg, sinks)
    t0 = time.time()
    i = publish_for(sink, 1.0, 0, t0)
    mqtt_broker.stop()
    try:
        i = publish_for(sink, 3.0, i, t0)
        assert not sink.connected
    finally:
        mqtt_broker.start()
    assert sink.wait_connected(WAIT_S)
    published = publish_for(sink, 1.0, i, t0)
    sink.stop()
    assert sub.wait_for(stopped, WAIT_S)
    seqs = seqs_in_first_arrival_order(sub.messages)
    assert seqs == list(range(1, seqs[-1] + 1)), "a seq is missing or out of order"
    statuses = [m.json["status"] for m in sub.on("available")]
    assert [s for s in statuses if s != "offline"] == ["online", "online", "stopped"]  # + our will
    assert len({m.json["seq"] for m in sub.on("expression")}) == published  # one event per frame; QoS 1 may repeat one


def test_buffer_keeps_the_newest_messages_and_counts_the_dropped(make_cfg, mqtt_broker, mqtt_subscriber, sinks):
    cfg = make_cfg(mqtt__buffer_size=32, privacy__mode="presence")
    sub = mqtt_subscriber([f"{cfg.mqtt.prefix}/#"], persistent=True)
    sink = start_sink(cfg, sinks)
    assert sub.wait_for(lambda msgs: len(msgs) == 1)  # online
    mqtt_broker.stop()
    try:
        assert sink.outbox.wait_until(lambda: not sink.connected, WAIT_S)
        t0 = time.time()
        outage = 50  # presence mode, faces alternating 1/0: one state message per frame
        for i in range(outage):
            sink.publish_frame(FrameResult(t0 + i / FPS, [TrackedFace("f1", "neutral", 0.9)] if i % 2 == 0 else []))
        sink.publish_stats(STATS)
    finally:
        mqtt_broker.start()
    assert sink.wait_connected(WAIT_S) and sink.flush(WAIT_S)
    sink.publish_stats(STATS)
    sink.stop()
    assert sub.wait_for(stopped, WAIT_S)
    seqs = seqs_in_first_arrival_order(sub.messages)
    # Queued while away: the states and a stats message, then "online" at reconnect. The buffer
    # kept the newest buffer_size of them; the older ones were dropped, and counted.
    dropped = outage + 1 + 1 - cfg.mqtt.buffer_size
    assert seqs == [1] + list(range(2 + dropped, seqs[-1] + 1))
    first_stats, second_stats = (m.json for m in sub.on("stats"))
    assert (first_stats["connected"], first_stats["buffered"], first_stats["buffer_dropped"]) == \
        (False, cfg.mqtt.buffer_size, outage - cfg.mqtt.buffer_size)
    assert second_stats["connected"] and second_stats["buffer_dropped"] == dropped


LAST_WILL_CHILD = """
import json, os, sys, time
from edge_fer.config import load_config
from edge_fer.publish import MqttSink
sink = MqttSink(load_config(os.devnull, json.loads(sys.argv[1]), {}))
sink.start()
sink.announce()  # as the daemon does at its first frame
print("connected" if sink.wait_connected(10) else "failed", flush=True)
time.sleep(60)
"""


def test_killed_daemon_leaves_the_last_will_offline(make_cfg, mqtt_subscriber):
    cfg = make_cfg()
    sub = mqtt_subscriber([f"{cfg.mqtt.prefix}/+/available"])
    overrides = {"mqtt.host": cfg.mqtt.host, "mqtt.port": cfg.mqtt.port, "mqtt.prefix": cfg.mqtt.prefix,
                 "mqtt.device_id": cfg.mqtt.device_id}
    child = subprocess.Popen([sys.executable, "-c", LAST_WILL_CHILD, json.dumps(overrides)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "connected"
        assert sub.wait_for(lambda msgs: len(msgs) == 1)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(WAIT_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert sub.wait_for(lambda msgs: len(msgs) == 2)
    online, will = sub.messages
    assert online.json["status"] == "online"
    assert will.json == {"schema": 1, "seq": None, "ts": None, "status": "offline"}
    validate(will)


def test_clean_stop_leaves_stopped_not_offline(make_cfg, mqtt_broker, mqtt_subscriber, sinks):
    cfg = make_cfg()
    sink = start_sink(cfg, sinks)
    sink.stop("maintenance")
    late = mqtt_subscriber([f"{cfg.mqtt.prefix}/+/available"])  # joins after: sees the retained value
    assert late.wait_for(lambda msgs: len(msgs) == 1)
    time.sleep(0.5)
    (retained,) = late.messages
    assert retained.retain and retained.json["status"] == "stopped" and retained.json["reason"] == "maintenance"


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_retained_state_and_aggregate_expire_on_the_broker_under_mqtt_5(make_cfg, mqtt_subscriber, sinks, protocol):
    """PRIVACY.md: the retained `state` and `aggregate` carry an MQTT 5 message expiry (3 heartbeats;
    2 windows), so the broker drops them once stale, e.g. after the device is switched off. README:
    3.1.1 has no expiry, so there they stay until replaced, and are still delivered and retained."""
    heartbeat_s, window_s = 1.0, 5.0  # the smallest allowed: 3 s and 10 s
    expiry = {"state": 3, "aggregate": 10}
    common = {"mqtt__protocol": protocol, "mqtt__state_heartbeat_s": heartbeat_s,
              "privacy__aggregate_window_s": window_s, "privacy__k_min": 1}
    labels, aggregate = make_cfg(**common), make_cfg(privacy__mode="aggregate", **common)
    prefixes = [labels.mqtt.prefix, aggregate.mqtt.prefix]
    live = mqtt_subscriber([f"{prefix}/#" for prefix in prefixes])
    t0 = 1_700_000_040.0  # a multiple of the window: frame 0 opens one, t0 + window_s closes it
    for cfg in (labels, aggregate):
        sink = start_sink(cfg, sinks)
        sink.publish_frame(frame(0, t0))
        sink.publish_frame(FrameResult(t0 + window_s, []))
        sink.stop()  # the device goes off: only the broker's copies remain
    assert live.wait_for(lambda msgs: sum(stopped([m]) for m in msgs) == 2)
    gone_at = time.monotonic()
    snapshots = live.on("state") + live.on("aggregate")
    assert {m.topic.rsplit("/", 1)[1] for m in snapshots} == {"state", "aggregate"}
    for m in snapshots:  # as delivered live: the time left is the whole expiry (the clock may tick once)
        kind = m.topic.rsplit("/", 1)[1]
        if protocol == "5":
            assert m.expiry_s in (expiry[kind], expiry[kind] - 1), (kind, m.expiry_s)
        else:
            assert m.expiry_s is None, (kind, m.expiry_s)

    time.sleep(max(0.0, gone_at + expiry["state"] + 1 - time.monotonic()))  # the state's expiry has passed
    late = mqtt_subscriber([f"{prefix}/#" for prefix in prefixes])  # a consumer starting now
    late.sync(f"{labels.mqtt.prefix}/sync")
    retained = {m.topic.rsplit("/", 1)[1]: m for m in late.messages if m.retain}
    assert retained["available"].json["status"] == "stopped"  # retained copies do reach it
    if protocol == "5":
        assert "state" not in retained, "the broker still hands out a state older than its expiry"
        assert 0 < retained["aggregate"].expiry_s < expiry["aggregate"]  # the broker counts it down
    else:
        assert retained["state"].json["faces"] == 0 and retained["state"].expiry_s is None
        assert retained["aggregate"].json["tracks"] == 1 and retained["aggregate"].expiry_s is None


def test_a_stop_before_the_broker_answers_leaves_stopped_not_online(make_cfg, mqtt_broker, mqtt_subscriber, sinks):
    """A SIGTERM (or --max-frames, or a reload) racing the first CONNACK: "online" must not be
    queued behind "stopped", or the retained status says online forever (a clean stop sends no will)."""
    relay = HeldRelay(mqtt_broker)
    try:
        cfg = make_cfg(mqtt__port=relay.port)
        sub = mqtt_subscriber([f"{cfg.mqtt.prefix}/+/available"])
        sink = open_sink(cfg, sinks)
        sink.announce()  # as the daemon does at its first frame
        assert relay.accepted.wait(WAIT_S)
        threading.Timer(0.2, relay.release).start()  # the CONNACK arrives while stop waits to deliver
        sink.stop("SIGTERM")
        assert sub.wait_for(stopped)
        time.sleep(0.5)
        # "online" (queued with the first frame, before the stop) may precede it; never follow it
        assert [m.json["status"] for m in sub.messages] in (["stopped"], ["online", "stopped"])
    finally:
        relay.close()


def test_online_reaches_the_broker_before_the_first_frame_s_messages(make_cfg, mqtt_broker, mqtt_subscriber, sinks):
    """The first frame is often processed before the broker's CONNACK: its state must not arrive
    before "online", or a consumer sees a state from a device it still thinks is offline."""
    relay = HeldRelay(mqtt_broker)
    try:
        cfg = make_cfg(mqtt__port=relay.port)
        sub = mqtt_subscriber([f"{cfg.mqtt.prefix}/#"])
        sink = open_sink(cfg, sinks)
        assert relay.accepted.wait(WAIT_S)
        sink.announce()  # as the daemon does at its first frame, then its messages
        sink.publish_frame(FrameResult(time.time(), [TrackedFace("a1", "fear", 0.8)]))
        relay.release()
        assert sink.wait_connected(WAIT_S) and sink.flush(WAIT_S)
        assert sub.wait_for(lambda msgs: any(m.topic.endswith("/state") for m in msgs), WAIT_S)
        kinds = [m.topic.rsplit("/", 1)[1] for m in sub.messages]
        assert kinds == ["available", "state"], kinds  # one "online", first
        assert sub.messages[0].json["status"] == "online"
    finally:
        relay.close()


def test_discovery_is_retained_and_resent_when_home_assistant_comes_online(make_cfg, mqtt_subscriber, sinks):
    ha = f"ha{uuid.uuid4().hex[:8]}"
    cfg = make_cfg(homeassistant__discovery=True, homeassistant__prefix=ha)
    assert start_sink(cfg, sinks).flush(WAIT_S)
    sub = mqtt_subscriber([f"{ha}/+/+/+/config"])  # after the sink: only retained copies arrive
    assert sub.wait_for(lambda msgs: len(msgs) == 3)
    assert all(m.retain for m in sub.messages)
    assert sorted(m.topic for m in sub.messages) == [f"{ha}/binary_sensor/dev1/face_present/config",
                                                     f"{ha}/sensor/dev1/expression/config",
                                                     f"{ha}/sensor/dev1/faces/config"]
    for m in sub.messages:
        jsonschema.validate(m.json, load_schema("discovery"), cls=jsonschema.Draft202012Validator)
        assert m.json["availability_topic"] == f"{cfg.mqtt.prefix}/dev1/available"
    sub.client.publish(f"{ha}/status", "online", qos=1)
    # The 3 configs again, and the 2 aggregate-mode entities' removals (empty payloads).
    assert sub.wait_for(lambda msgs: len(msgs) == 8)
    assert not any(m.retain for m in sub.messages[3:])  # live re-sends, not retained replays
    assert sorted(m.topic for m in sub.messages[3:] if m.payload == b"") == [f"{ha}/sensor/dev1/window_expression/config",
                                                                            f"{ha}/sensor/dev1/window_faces/config"]


def test_a_stricter_privacy_mode_removes_the_entities_it_no_longer_publishes(make_cfg, mqtt_subscriber, sinks):
    """labels -> presence: Home Assistant must lose the expression sensor, not keep a stale one."""
    ha = f"ha{uuid.uuid4().hex[:8]}"
    labels = start_sink(make_cfg(homeassistant__discovery=True, homeassistant__prefix=ha), sinks)
    assert labels.flush(WAIT_S)
    labels.stop()
    presence = start_sink(make_cfg(homeassistant__discovery=True, homeassistant__prefix=ha,
                                   privacy__mode="presence"), sinks)
    assert presence.flush(WAIT_S)
    sub = mqtt_subscriber([f"{ha}/#"])  # what a Home Assistant starting now would be told
    assert sub.wait_for(lambda msgs: len(msgs) >= 2)
    time.sleep(0.3)  # so that a stale config would arrive too
    assert sorted(m.topic for m in sub.messages) == [f"{ha}/binary_sensor/dev1/face_present/config",
                                                     f"{ha}/sensor/dev1/faces/config"]


def test_a_broker_refusing_mqtt_5_is_told_how_to_fall_back_to_3_1_1():
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    from edge_fer.publish._mqtt import describe_refusal

    unsupported = ReasonCode(PacketTypes.CONNACK, identifier=0x84)  # what a 3.1.1-only broker answers
    assert 'set mqtt.protocol = "3.1.1"' in describe_refusal(unsupported)


def test_a_broker_that_answered_before_and_now_hangs_is_not_blamed_on_the_port():
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    from edge_fer.publish._mqtt import describe_no_answer

    keepalive = ReasonCode(PacketTypes.DISCONNECT, "Keep alive timeout")
    assert "is mqtt.port an MQTT port" in describe_no_answer(keepalive, tls=False, answered_before=False)
    stuck = describe_no_answer(keepalive, tls=False, answered_before=True)  # e.g. a frozen mosquitto
    assert "does not answer (stuck or overloaded?)" in stuck and "mqtt.port" not in stuck


def test_nothing_is_announced_until_the_daemon_sees_a_picture(make_cfg, mqtt_subscriber, sinks):
    """Connected, but no first frame yet (a camera still away): the retained status stays what it
    was, so Home Assistant shows the device unavailable rather than "online, no face"."""
    cfg = make_cfg(homeassistant__discovery="true")
    sub = mqtt_subscriber([f"{cfg.mqtt.prefix}/#", "homeassistant/#"])
    sink = open_sink(cfg, sinks)
    assert sink.wait_connected(WAIT_S) and sink.flush(WAIT_S)  # anything it queued has reached the broker
    sub.sync(f"{cfg.mqtt.prefix}/sync")  # and has come on to the subscriber
    assert sub.on("available") == [] and [m for m in sub.messages if m.topic.startswith("homeassistant/")] == []
    sink.announce()
    assert sub.wait_for(lambda _: [m.json["status"] for m in sub.on("available")] == ["online"], WAIT_S)
    assert sub.wait_for(lambda msgs: any(m.topic.startswith("homeassistant/") for m in msgs), WAIT_S)


def test_online_reaches_the_broker_even_when_a_long_outage_overflowed_the_queue(make_cfg, mqtt_broker,
                                                                                mqtt_subscriber, sinks):
    """The broker away from boot, the queue full: the "online" queued with the first frame is
    among the dropped, and the connect must still say it."""
    cfg = make_cfg(mqtt__buffer_size=32)
    mqtt_broker.stop()
    try:
        sink = open_sink(cfg, sinks)
        sink.announce()
        for i in range(60):
            sink.publish_frame(FrameResult(time.time() + i, [TrackedFace("a1", LABELS[i % 7], 0.8)]))
        assert sink.outbox.dropped > 0
    finally:
        mqtt_broker.start()
    assert sink.wait_connected(WAIT_S) and sink.flush(WAIT_S)
    sub = mqtt_subscriber([f"{cfg.mqtt.prefix}/+/available"])  # the retained status
    assert sub.wait_for(lambda msgs: len(msgs) >= 1, WAIT_S)
    assert sub.messages[-1].json["status"] == "online"


def test_a_reconnect_while_the_picture_is_lost_keeps_no_picture(make_cfg, mqtt_broker, mqtt_subscriber, sinks):
    """Reconnecting re-announces "online" only while the daemon sees a picture: a broker restart
    during a camera outage must not turn a blind device back into "online, no face"."""
    cfg = make_cfg()
    sink = open_sink(cfg, sinks)
    assert sink.wait_connected(WAIT_S)
    sink.announce()
    sink.picture_lost(FrameResult(time.time()))
    assert sink.flush(WAIT_S)
    mqtt_broker.stop()
    mqtt_broker.start()
    assert sink.wait_connected(WAIT_S) and sink.flush(WAIT_S)
    sub = mqtt_subscriber([cfg.mqtt.prefix + "/+/available"])  # the retained status, as a late consumer sees it
    assert sub.wait_for(lambda msgs: len(msgs) >= 1, WAIT_S)
    time.sleep(0.3)  # so that an "online" sent after the reconnect would arrive too
    assert [m.json["status"] for m in sub.messages] == ["no_picture"]
    sink.announce()  # the next frame
    assert sub.wait_for(lambda msgs: [m.json["status"] for m in msgs][-1:] == ["online"], WAIT_S)


def test_old_layout_discovery_is_cleared_even_when_a_full_queue_dropped_the_first_clearing(
        make_cfg, mqtt_broker, mqtt_subscriber, sinks):
    ha = f"ha{uuid.uuid4().hex[:8]}"
    cfg = make_cfg(mqtt__buffer_size=32, homeassistant__discovery=True, homeassistant__prefix=ha)
    old_topic = f"{ha}/sensor/dev1_expression/config"  # where edge-fer first put it
    writer = mqtt_subscriber([f"{ha}/none"])
    writer.client.publish(old_topic, json.dumps({"name": "old"}), qos=1, retain=True).wait_for_publish(WAIT_S)
    mqtt_broker.stop()
    try:
        sink = open_sink(cfg, sinks)
        sink.announce()
        for i in range(60):  # the boot-time outage overflows the queue: the clearing is dropped
            sink.publish_frame(FrameResult(time.time() + i, [TrackedFace("a1", LABELS[i % 7], 0.8)]))
        assert sink.outbox.dropped > 11
    finally:
        mqtt_broker.start()
    assert sink.wait_connected(WAIT_S) and sink.flush(WAIT_S)
    late = mqtt_subscriber([old_topic])  # a retained config would arrive at once
    time.sleep(0.5)
    assert late.messages == []
