"""A real mosquitto for tests, and a paho subscriber that records what arrives.

``mqtt_broker`` (session fixture): mosquitto on a free loopback port, anonymous, with
persistence (so a stop/restart keeps retained messages and persistent sessions, as a real
broker's restart would). ``Broker.stop()`` / ``start()`` keep the port, for outage tests.
``mqtt_subscriber`` (fixture): a factory of ``Subscriber``s closed at test end.
Tests isolate themselves by topic prefix, not by broker.
"""
from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
HOST = "127.0.0.1"
READY_TIMEOUT_S = 5.0
WAIT_S = 10.0
SESSION_EXPIRY_S = 300
SUBSCRIBER_RECONNECT_S = (1, 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Broker:
    """One mosquitto process; ``conf`` lines are appended to the generated config."""

    def __init__(self, workdir: Path, conf: str = "allow_anonymous true", port: int | None = None):
        self.host = HOST
        self.port = port or free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path = workdir / "mosquitto.conf"
        self.conf_path.write_text(
            f"listener {self.port} {HOST}\n"
            f"user {getpass.getuser()}\n"  # as root, mosquitto would drop to a user who cannot read tmp
            f"persistence true\npersistence_location {workdir}/\n"
            f"log_dest file {workdir}/mosquitto.log\n{conf}\n")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        self._proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf_path)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: see {self.workdir}/mosquitto.log")
            try:
                socket.create_connection((HOST, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {READY_TIMEOUT_S} s")

    def stop(self) -> None:
        """A graceful stop (SIGTERM): mosquitto saves its persistence file first."""
        if self.running:
            assert self._proc is not None
            self._proc.terminate()
            self._proc.wait(timeout=READY_TIMEOUT_S)

    def log(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text() if path.exists() else ""

    def subscriber(self, topics: list[str], persistent: bool = False,
                   configure: Callable[[mqtt.Client], None] | None = None) -> Subscriber:
        return Subscriber(self, topics, persistent, configure)


class HeldRelay:
    """A loopback TCP relay to a broker that accepts a client at once but passes nothing on while
    held: held from the start, a broker slow to answer CONNECT; held later (``hold()``), a
    half-open connection (Wi-Fi gone, TCP not yet timed out) where nothing is acknowledged."""

    def __init__(self, broker: Broker):
        self._broker = broker
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        self.accepted = threading.Event()
        self._flowing = threading.Event()
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._serve, daemon=True).start()

    def release(self) -> None:
        self._flowing.set()

    def hold(self) -> None:
        self._flowing.clear()

    def _serve(self) -> None:
        client, _ = self._listener.accept()
        self._sockets.append(client)
        self.accepted.set()
        self._flowing.wait()
        upstream = socket.create_connection((self._broker.host, self._broker.port))
        self._sockets.append(upstream)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self._flowing.wait()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()

    def close(self) -> None:
        """Ends both sides' connections, as a closed socket or a dead process would."""
        self._flowing.set()
        for sock in self._sockets:
            try:  # close() alone leaves the connection open while a pipe thread is in recv() on it
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # never connected (the listener), or already shut
            sock.close()


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    expiry_s: int | None = None  # MQTT 5 MessageExpiryInterval as the broker sent it: the time left

    @property
    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """Subscribes (QoS 1) and records every message. ``persistent`` keeps its session on the
    broker, so messages sent while it is away (a broker restart) still reach it. ``configure``
    may set TLS or credentials on the paho client before it connects."""

    def __init__(self, broker: Broker, topics: list[str], persistent: bool = False,
                 configure: Callable[[mqtt.Client], None] | None = None):
        self.topics = topics
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:12]}",
                                  protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(*SUBSCRIBER_RECONNECT_S)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        if configure:
            configure(self.client)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S if persistent else 0
        self.client.connect(broker.host, broker.port, clean_start=not persistent, properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(WAIT_S):
            raise RuntimeError("subscriber did not get its SUBACK")

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain),
                                          getattr(msg.properties, "MessageExpiryInterval", None)))
            self._cond.notify_all()

    def sync(self, topic: str) -> None:
        """Publish a marker on ``topic`` (which this subscriber must match) and wait for it. The
        broker queues to one client in order, so every message queued before the marker (the
        retained ones sent on subscribing, say) has arrived: an absence can be asserted without a sleep."""
        marker = uuid.uuid4().hex.encode()
        self.client.publish(topic, marker, qos=1)
        if not self.wait_for(lambda msgs: any(m.topic == topic and m.payload == marker for m in msgs)):
            raise RuntimeError(f"the marker on {topic} did not come back")

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = WAIT_S) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.messages), timeout)

    def on(self, suffix: str) -> list[Received]:
        """Messages whose topic ends with ``/<suffix>``."""
        with self._cond:
            return [m for m in self.messages if m.topic.endswith("/" + suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = Broker(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def mqtt_subscriber(mqtt_broker: Broker) -> Iterator[Callable[..., Subscriber]]:
    """``mqtt_subscriber(["edge-fer/#"])`` -> a Subscriber on the session broker, closed after."""
    made: list[Subscriber] = []

    def make(topics: list[str], persistent: bool = False) -> Subscriber:
        if not mqtt_broker.running:  # a failed outage test must not break the next test
            mqtt_broker.start()
        made.append(mqtt_broker.subscriber(topics, persistent=persistent))
        return made[-1]

    yield make
    for sub in made:
        sub.close()
