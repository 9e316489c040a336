"""A local mosquitto for bench/soak.py --mqtt, and a subscriber that hands every message on.

The same broker set-up as tests/mqtt_broker.py (a free loopback port, anonymous), without
persistence: a soak starts one broker and stops it at the end.
"""
from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

HOST = "127.0.0.1"
READY_TIMEOUT_S = 5.0  # as tests/mqtt_broker.py
STOP_TIMEOUT_S = 5.0


class Broker:
    """mosquitto on a free loopback port, its log in ``workdir``."""

    def __init__(self, workdir: Path):
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).is_file():
            raise SystemExit("--mqtt needs the mosquitto broker: apt install mosquitto (or leave out --mqtt)")
        with socket.socket() as s:
            s.bind((HOST, 0))
            self.port = s.getsockname()[1]
        self.log_path = workdir / "mosquitto.log"
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} {HOST}\nallow_anonymous true\n"
                        f"user {getpass.getuser()}\n"  # as root, mosquitto would drop to a user who cannot read tmp
                        f"log_dest file {self.log_path}\n")
        self._proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise SystemExit(f"mosquitto exited at start: see {self.log_path}")
            try:
                socket.create_connection((HOST, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise SystemExit(f"mosquitto did not listen on {HOST}:{self.port} within {READY_TIMEOUT_S:g} s")

    def subscribe(self, topic: str, on_message: Callable[[str, dict], None]) -> mqtt.Client:
        """A client on ``topic`` calling ``on_message(topic, payload)`` for each JSON object
        (an empty payload, which clears a retained message, is skipped)."""
        def handle(_client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
            try:
                payload = json.loads(msg.payload)
            except ValueError:
                return
            if isinstance(payload, dict):
                on_message(msg.topic, payload)

        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        client.on_message = handle
        client.connect(HOST, self.port)
        client.loop_start()
        return client

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(STOP_TIMEOUT_S)
