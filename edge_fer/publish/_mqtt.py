"""The MQTT sink: paho-mqtt 2.x, MQTT 5 (or 3.1.1), QoS 1, persistent session, our own bounded buffer.

Why a buffer of our own: while disconnected paho queues without bound (or, capped, refuses the
NEWEST message); we want a fixed memory bound that drops the OLDEST, counted, and in-order
delivery across reconnects. The delivery rules, all decided under the outbox lock:

- a message goes to paho only while connected, with at most ``MAX_INFLIGHT`` unacknowledged;
- after a reconnect paho first re-sends what it still held unacknowledged; nothing new is
  handed over until those are acknowledged, so order survives the outage.

Connection problems are logged once per change, with the likely fix and never the password.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import sys
import threading
import time
from collections import deque
from typing import Any
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_fer.config import MQTT_V5, MQTT_V311, Config
from edge_fer.errors import PublishError
from edge_fer.messages import FrameResult
from edge_fer.publish._discovery import HA_ONLINE, status_topic
from edge_fer.publish._payloads import NO_PICTURE, NO_PICTURE_REASON, ONLINE, QOS, STOPPED, Message
from edge_fer.publish._sink import STOP_DRAIN_S, BufferedSink, drain_timeout

log = logging.getLogger("edge_fer.publish.mqtt")

MAX_INFLIGHT = 20
"""paho's default window; we never hand paho more, so paho never queues on its own."""
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 60
"""paho doubles the wait after each failed attempt, from the minimum up to the maximum."""
SESSION_EXPIRY_S = 3600
"""The broker keeps our session (and our Home Assistant subscription) across outages this long."""
STOP_JOIN_S = 0.3
"""At stop, how long to wait for paho's network thread, which may be asleep in its reconnect
backoff or in a connect timeout: it is a daemon thread, so it is left behind rather than waited for."""
DISCONNECT_LINGER_S = 1.0
"""How long an abandoned connection waits, after its DISCONNECT, for the broker to close it (in
the stopper thread: stop does not wait for it)."""
AUTH_REASONS = {"Bad user name or password", "Not authorized"}
PASSWORD_SOURCES = "mqtt.password, EDGE_FER_MQTT__PASSWORD, mqtt.password_file or $CREDENTIALS_DIRECTORY/mqtt_password"
PROTOCOLS = {MQTT_V5: mqtt.MQTTv5, MQTT_V311: mqtt.MQTTv311}


def _encode(message: Message) -> bytes:
    return b"" if message.payload is None else json.dumps(message.payload, separators=(",", ":")).encode()


def _publish_properties(message: Message, protocol: str) -> Properties | None:
    """Message expiry exists only in MQTT 5; under 3.1.1 a retained message stays until replaced."""
    if message.expiry_s is None or protocol != MQTT_V5:
        return None
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = message.expiry_s
    return props


def _read_until_closed(sock: socket.socket, timeout: float) -> None:
    """Read and drop what comes until the peer closes (or ``timeout``), so that closing ``sock``
    then sends no reset."""
    deadline = time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                return
    except OSError:  # a timeout, or the connection is already gone
        pass


def _no_passphrase() -> str:
    """Called by OpenSSL only for an encrypted key: fail with the fix instead of prompting on a tty."""
    raise PublishError("mqtt.tls_key_file is encrypted: set its passphrase in mqtt.tls_key_password "
                       "(or EDGE_FER_MQTT__TLS_KEY_PASSWORD), or give an unencrypted key")


def describe_connect_error(exc: BaseException | None, tls: bool = False) -> str:
    """One line saying what went wrong and where to look."""
    if tls and isinstance(exc, (ConnectionResetError, ssl.SSLEOFError)):
        return (f"the broker hung up during the TLS handshake ({type(exc).__name__}); is mqtt.port its TLS "
                "port (usually 8883)? Without TLS, leave mqtt.tls_ca_file unset")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS certificate not trusted ({exc.verify_message}); check mqtt.tls_ca_file, "
                "and that mqtt.host matches the name in the broker's certificate")
    if isinstance(exc, ssl.SSLError):
        return (f"TLS handshake failed: {exc.reason or exc} "
                "(is this a TLS port, and is the client certificate accepted?)")
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running and listening on this port?)"
    if isinstance(exc, socket.gaierror):
        return f"host name not found ({exc.strerror})"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "no answer (timed out)"
    return f"{type(exc).__name__}: {exc}"


def describe_no_answer(reason: ReasonCode, tls: bool, answered_before: bool) -> str:
    """The connection opened, but closed before the broker answered CONNECT. A broker that has
    answered this client before is there but stuck (frozen, overloaded): the port is not the cause."""
    if answered_before:
        hint = "the broker accepts connections but does not answer (stuck or overloaded?)"
    else:
        hint = ("is mqtt.port its TLS port (usually 8883)?" if tls else
                "is mqtt.port an MQTT port, and without TLS? A TLS port (usually 8883) needs mqtt.tls_ca_file")
    return f"the connection closed before the broker answered ({reason.getName()}); {hint}"


def describe_refusal(reason: ReasonCode) -> str:
    name = reason.getName()
    if name in AUTH_REASONS:
        return f"{name}; check mqtt.username and the password ({PASSWORD_SOURCES})"
    if name == "Client identifier not valid":
        return f"{name}; check mqtt.client_id"
    if name == "Unsupported protocol version":
        return f"{name}; the broker may speak only MQTT 3.1.1: set mqtt.protocol = \"3.1.1\""
    return name


class MqttSink(BufferedSink):
    """Publishes to one broker; survives outages by buffering (see the module docstring)."""

    def __init__(self, cfg: Config, clock: Callable[[], float] = time.time,
                 reconnect_s: tuple[int, int] = (RECONNECT_MIN_S, RECONNECT_MAX_S),
                 stop_timeout_s: float = STOP_DRAIN_S):
        super().__init__(cfg, clock)
        self._cfg = cfg.mqtt
        self._address = f"{cfg.mqtt.host}:{cfg.mqtt.port}"
        self._ha_status = status_topic(cfg.homeassistant.prefix) if cfg.homeassistant.discovery else None
        self._stop_timeout_s = stop_timeout_s
        self._connected = False
        self._down = False  # a connection attempt failed or the connection dropped: stop need not wait
        self._answered = False  # the broker answered this connection attempt's CONNECT (CONNACK)
        self._ever_answered = False  # ... or any earlier attempt's
        self._inflight: deque[Message] = deque()  # handed to paho, not yet acknowledged (PUBACKs come in order)
        self._resync = False  # reconnected; paho is re-sending what it held
        self._stopping = False
        self._stopped = False
        # What every connect re-sends: None before the first frame (nothing), ONLINE after announce()
        # ("online" and discovery), NO_PICTURE while the camera is away (the broker may have fired
        # the Last Will meanwhile: a blind device must say so, not stay "offline" or turn "online").
        self._availability: str | None = None
        self._no_picture_reason = NO_PICTURE_REASON
        # Queued while disconnected: the drop count then. The connect sends it again only if the
        # full queue may have dropped it since (oldest first); a repeat would be noise, not harm.
        self._queued_at_drops: int | None = None
        self._last_problem: str | None = None
        self._client = self._make_client(reconnect_s)
        self._sender = threading.Thread(target=self._send_loop, name="edge-fer-mqtt-send", daemon=True)

    # --- set-up -----------------------------------------------------------------------------

    def _make_client(self, reconnect_s: tuple[int, int]) -> mqtt.Client:
        m = self._cfg
        v5 = m.protocol == MQTT_V5  # 3.1.1 asks for the persistent session in the constructor
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=m.client_id, protocol=PROTOCOLS[m.protocol],
                             clean_session=None if v5 else False)
        will = self.stream.last_will()
        client.will_set(will.topic, _encode(will), will.qos, will.retain)
        if m.username:
            client.username_pw_set(m.username, m.password or None)
        if m.tls_ca_file:
            self._set_tls(client)
        client.reconnect_delay_set(*reconnect_s)
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.on_pre_connect = self._on_pre_connect
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _set_tls(self, client: mqtt.Client) -> None:
        m = self._cfg
        try:
            client.tls_set(ca_certs=m.tls_ca_file, certfile=m.tls_cert_file or None,
                           keyfile=m.tls_key_file or None, keyfile_password=m.tls_key_password or _no_passphrase,
                           cert_reqs=ssl.CERT_REQUIRED)
        except (ssl.SSLError, OSError) as exc:
            hint = "; if the key is encrypted, check mqtt.tls_key_password" if m.tls_key_password else ""
            raise PublishError(f"cannot load the TLS files (mqtt.tls_ca_file, mqtt.tls_cert_file, "
                               f"mqtt.tls_key_file): {exc}{hint}") from exc
        client.tls_insecure_set(m.tls_insecure)

    # --- the Sink interface ---------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    def start(self) -> None:
        """Returns at once: connecting, and retrying with backoff, happen in paho's thread."""
        self._sender.start()
        if self._cfg.protocol == MQTT_V5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            self._client.connect_async(self._cfg.host, self._cfg.port, self._cfg.keepalive_s,
                                       clean_start=False, properties=props)
        else:
            self._client.connect_async(self._cfg.host, self._cfg.port, self._cfg.keepalive_s)
        self._client.loop_start()

    def announce(self) -> None:
        """Queued now, even before the first CONNACK: ahead of the frame's messages, which would
        otherwise reach the broker before "online". A connect repeats it unless it is still queued
        (a long outage may have dropped it from the full queue)."""
        with self.outbox.cond:  # one step with _on_connect
            self._availability = ONLINE
            if not self._stopped:
                self.outbox.push(lambda: self.stream.announcement())
                self._queued_at_drops = None if self._connected else self.outbox.dropped

    def picture_lost(self, result: FrameResult, reason: str = NO_PICTURE_REASON) -> None:
        with self.outbox.cond:  # one step with _on_connect
            self._availability, self._no_picture_reason = NO_PICTURE, reason
            super().picture_lost(result, reason)
            self._queued_at_drops = None if self._connected else self.outbox.dropped

    def wait_connected(self, timeout: float) -> bool:
        return self.outbox.wait_until(lambda: self._connected, timeout)

    def flush(self, timeout: float) -> bool:
        """Wait until the broker has acknowledged everything queued so far."""
        return self.outbox.wait_until(self._delivered, timeout)

    def stop(self, reason: str = STOPPED, drain_s: float | None = None) -> list[Message]:
        """Deliver what is queued, waiting at most the stop budget, and not at all while the broker is away."""
        with self.outbox.cond:  # one step with _on_connect: no "online" can follow "stopped"
            if self._stopped:
                return []
            self._stopped = True
            self.outbox.push(lambda: self.stream.available(STOPPED, reason))
        self.outbox.wait_until(lambda: self._delivered() or self._down, drain_timeout(self._stop_timeout_s, drain_s))
        self._stopping = True
        queued = self.outbox.drain()
        if self._sender.is_alive():
            self._sender.join()  # at once: nothing is left to take
        with self.outbox.cond:
            undelivered = [*self._inflight, *queued]
        self._client.disconnect()
        stopper = threading.Thread(target=self._release, name="edge-fer-mqtt-stop", daemon=True)
        stopper.start()
        stopper.join(STOP_JOIN_S)
        return undelivered

    def _release(self) -> None:
        """End paho's thread, then close what it may have opened after ``disconnect``.

        Inside a connect (a TLS handshake, a slow TCP connect) that thread cannot see the stop:
        when the broker answers, it sends CONNECT, with our will, and ends, leaving the socket
        open. Closed later without DISCONNECT (garbage collection, exit), that connection would
        fire the will ("offline") over the retained status a reloaded sink has set since.

        So it gets a DISCONNECT, and is held open until the broker, having read it, closes it.
        paho closes its socket as soon as DISCONNECT is written, with the broker's replies unread
        (TLS 1.3 session tickets, the CONNACK): a socket closed with unread data is reset (RST),
        not closed, and mosquitto, reset before it has read the DISCONNECT behind the CONNECT,
        fires the will all the same (mosquitto 2.0 over TLS: 44 of 50 such connections).
        """
        self._client.loop_stop()
        sock = self._client.socket()
        if sock is None:
            return
        try:
            held = socket.socket(fileno=os.dup(sock.fileno()))  # keeps the connection past paho's close
        except OSError:
            held = None
        self._client.disconnect()
        self._client.loop_write()  # paho closes its socket once DISCONNECT is written
        if held is not None:
            with held:
                _read_until_closed(held, DISCONNECT_LINGER_S)

    # --- delivery -------------------------------------------------------------------------------

    def _ready(self) -> bool:
        return self._connected and not self._resync and len(self._inflight) < MAX_INFLIGHT

    def _delivered(self) -> bool:
        return len(self.outbox) == 0 and not self._inflight

    def _send_loop(self) -> None:
        while True:
            with self.outbox.cond:
                message = self.outbox.take(self._ready)
                if message is None:
                    return
                self._inflight.append(message)
            try:
                self._client.publish(message.topic, _encode(message), message.qos, message.retain,
                                     properties=_publish_properties(message, self._cfg.protocol))
            except Exception:  # one bad message must not end delivery of all the others
                log.exception("cannot publish a %s message on %s; dropped", message.kind, message.topic)
                with self.outbox.cond:
                    self._inflight.remove(message)
                    self.outbox.cond.notify_all()

    # --- paho callbacks (paho's network thread) -------------------------------------------------

    def _report(self, level: int, problem: str) -> None:
        """Log a connection problem once, not at every retry of a long outage."""
        if problem != self._last_problem:
            log.log(level, problem)
            self._last_problem = problem

    def _on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        self._answered = False

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason: ReasonCode, properties: Properties | None) -> None:
        self._answered = self._ever_answered = True
        if reason.is_failure:  # return early: a refused connection is not a connection
            self._mark_down()
            self._report(logging.ERROR, f"MQTT broker {self._address} refused the connection: "
                                        f"{describe_refusal(reason)}; retrying with backoff")
            return
        self._last_problem = None
        log.info("connected to MQTT broker %s (%s session)", self._address,
                 "resumed" if flags.session_present else "new")
        if self._ha_status:
            client.subscribe(self._ha_status, qos=QOS)
        with self.outbox.cond:  # one step: once announced, nothing is sent as connected before "online" is queued
            self._connected, self._down = True, False
            self._resync = bool(self._inflight)
            # Not before the daemon's first frame (announce), nor after a stop before this CONNACK:
            # the retained status stays what it was ("stopped", or the Last Will's "offline").
            still_queued = self._queued_at_drops == self.outbox.dropped
            dropped = self._queued_at_drops is not None and not still_queued  # maybe the announcement with it
            self._queued_at_drops = None
            if not self._stopped and not still_queued:
                if self._availability == ONLINE:
                    self.outbox.push(lambda: self.stream.announcement(clear_legacy=dropped))
                elif self._availability == NO_PICTURE:
                    self.outbox.push(lambda: self.stream.blind_announcement(self._no_picture_reason, dropped))
            self.outbox.cond.notify_all()  # the sender waits for a connection, not only for messages

    def _mark_down(self) -> None:
        with self.outbox.cond:
            self._down = True
            self.outbox.cond.notify_all()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._mark_down()
        exc = sys.exc_info()[1]  # paho calls this from inside its ``except OSError``
        level = logging.ERROR if isinstance(exc, ssl.SSLError) else logging.WARNING
        self._report(level, f"cannot connect to MQTT broker {self._address}: "
                            f"{describe_connect_error(exc, bool(self._cfg.tls_ca_file))}; retrying with backoff")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason: ReasonCode, properties: Properties | None) -> None:
        with self.outbox.cond:
            was_connected, self._connected, self._down = self._connected, False, True
            self.outbox.cond.notify_all()
        if was_connected and not self._stopping:
            log.warning("lost MQTT broker %s (%s); buffering up to %d messages until it is back",
                        self._address, reason.getName(), self.outbox.capacity)
        elif not was_connected and not self._answered and not self._stopped:
            # A port that takes TCP but does not speak MQTT to us: plain MQTT on a TLS port (or the
            # reverse), another service. paho calls no on_connect_fail for it.
            self._report(logging.ERROR, f"cannot connect to MQTT broker {self._address}: "
                                        f"{describe_no_answer(reason, bool(self._cfg.tls_ca_file), self._ever_answered)}; "
                                        "retrying with backoff")

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode,
                    properties: Properties) -> None:
        if reason.is_failure:
            self._report(logging.WARNING, f"MQTT broker {self._address} rejected a message: {reason.getName()}")
        with self.outbox.cond:
            if self._inflight:
                self._inflight.popleft()
            if not self._inflight:
                self._resync = False
            self.outbox.cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if (message.topic == self._ha_status and message.payload == HA_ONLINE and self._availability
                and not self._stopped):  # a reload's drain: the old sink may just have withdrawn them
            log.info("Home Assistant is online: re-sending discovery")
            self.outbox.push(self.stream.discovery)
