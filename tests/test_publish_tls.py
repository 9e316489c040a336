"""MqttSink over TLS with a client certificate and a password file, against a real mosquitto."""
from __future__ import annotations

import logging
import os
import re
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest

from edge_fer.config import Config, dump_config, load_config
from edge_fer.errors import ConfigError, PublishError
from edge_fer.publish import MqttSink
from mqtt_broker import Broker, HeldRelay

USER, PASSWORD = "kiosk", "correct-horse-battery"
KEY_PASSPHRASE = "key-passphrase-456"
WRONG_PASSWORD = "wrong-password-123"
WAIT_S = 10.0
SSL = ["openssl"]
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run([*SSL, *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d: Path, name: str) -> None:
    openssl("req", "-x509", *EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
            "-subj", f"/CN=edge-fer test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def make_leaf(d: Path, name: str, ca: str, extensions: str) -> None:
    (d / f"{name}.ext").write_text(extensions + "\nbasicConstraints=CA:FALSE\n"
                                   "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n")
    openssl("req", *EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "other-ca")  # a CA the broker's certificate does not chain to
    make_leaf(d, "server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth")
    make_leaf(d, "client", "ca", "extendedKeyUsage=clientAuth")
    openssl("pkey", "-in", "client.key", "-out", "client-encrypted.key", "-aes256",
            "-passout", f"pass:{KEY_PASSPHRASE}", cwd=d)
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(d / "passwd"), USER, PASSWORD], check=True,
                   capture_output=True)
    (d / "password").write_text(PASSWORD + "\n")
    (d / "wrong-password").write_text(WRONG_PASSWORD + "\n")
    return d


@pytest.fixture(scope="module")
def tls_broker(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = Broker(tmp_path_factory.mktemp("mosquitto-tls"), conf=(
        f"cafile {pki}/ca.crt\ncertfile {pki}/server.crt\nkeyfile {pki}/server.key\n"
        f"require_certificate true\nallow_anonymous false\npassword_file {pki}/passwd\n"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def tls_cfg(tls_broker: Broker, pki: Path):
    def make(**overrides: Any) -> Config:
        return load_config(os.devnull, {
            "mqtt.host": tls_broker.host, "mqtt.port": tls_broker.port, "mqtt.device_id": "tls1",
            "mqtt.prefix": f"t{uuid.uuid4().hex[:10]}", "mqtt.username": USER,
            "mqtt.password_file": str(pki / "password"), "mqtt.tls_ca_file": str(pki / "ca.crt"),
            "mqtt.tls_cert_file": str(pki / "client.crt"), "mqtt.tls_key_file": str(pki / "client.key"),
            **overrides}, {})
    return make


def secure(pki: Path):
    """A subscriber's TLS and password set-up, as the broker requires."""
    def configure(client: mqtt.Client) -> None:
        client.tls_set(ca_certs=str(pki / "ca.crt"), certfile=str(pki / "client.crt"),
                       keyfile=str(pki / "client.key"), cert_reqs=ssl.CERT_REQUIRED)
        client.username_pw_set(USER, PASSWORD)
    return configure


def broker_log_line(broker: Broker, pattern: str) -> str:
    """The first line of the broker's log matching ``pattern``, waited for."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if found := re.search(pattern, broker.log(), re.MULTILINE):
            return found.group(0)
        time.sleep(0.05)
    raise AssertionError(f"no broker log line matching {pattern!r}:\n{broker.log()}")


def wait_for_log(caplog: pytest.LogCaptureFixture, text: str) -> logging.LogRecord:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for record in caplog.records:
            if text in record.getMessage():
                return record
        time.sleep(0.05)
    raise AssertionError(f"no log line with {text!r}: {[r.getMessage() for r in caplog.records]}")


@pytest.mark.parametrize("key", [{}, {"mqtt.tls_key_file": "client-encrypted.key",
                                      "mqtt.tls_key_password": KEY_PASSPHRASE}], ids=["plain-key", "encrypted-key"])
def test_good_client_connects_and_publishes(tls_broker, tls_cfg, pki, key):
    cfg = tls_cfg(**{k: str(pki / v) if k.endswith("_file") else v for k, v in key.items()})

    sub = tls_broker.subscriber([f"{cfg.mqtt.prefix}/#"], configure=secure(pki))
    sink = MqttSink(cfg)
    sink.start()
    sink.announce()  # as the daemon does at its first frame
    try:
        assert sink.wait_connected(WAIT_S)
    finally:
        sink.stop()
    assert sub.wait_for(lambda msgs: [m.json["status"] for m in msgs] == ["online", "stopped"])
    sub.close()


@pytest.mark.parametrize("override, expected, secret", [
    ({"mqtt.password_file": "wrong-password"}, "refused the connection", WRONG_PASSWORD),
    ({"mqtt.tls_ca_file": "other-ca.crt"}, "TLS certificate not trusted", PASSWORD),
])
def test_bad_credentials_fail_with_one_clear_log_line(tls_cfg, pki, caplog, override, expected, secret):
    cfg = tls_cfg(**{k: str(pki / v) for k, v in override.items()})
    caplog.set_level(logging.WARNING, logger="edge_fer.publish.mqtt")
    sink = MqttSink(cfg, reconnect_s=(1, 1), stop_timeout_s=0.1)
    sink.start()
    sink.announce()  # as the daemon does at its first frame
    try:
        record = wait_for_log(caplog, expected)
        time.sleep(1.5)  # at least one retry
        assert not sink.connected
    finally:
        sink.stop()
    assert record.levelno == logging.ERROR
    messages = [r.getMessage() for r in caplog.records]
    assert sum(expected in m for m in messages) == 1, "repeated retries must not repeat the log line"
    assert not any(secret in m for m in messages)
    if "password" in next(iter(override)):
        assert "check mqtt.username and the password" in record.getMessage()


def test_unloadable_client_key_is_a_publish_error(tls_cfg, pki):
    with pytest.raises(PublishError, match="cannot load the TLS files"):
        MqttSink(tls_cfg(**{"mqtt.tls_key_file": str(pki / "other-ca.key")}))


def test_encrypted_key_without_its_passphrase_names_the_setting(tls_cfg, pki):
    """OpenSSL would otherwise prompt on the terminal (or fail with a bare EINVAL under systemd)."""
    with pytest.raises(PublishError, match="mqtt.tls_key_file is encrypted: set its passphrase in "
                                           "mqtt.tls_key_password"):
        MqttSink(tls_cfg(**{"mqtt.tls_key_file": str(pki / "client-encrypted.key")}))


def test_wrong_key_passphrase_is_a_publish_error_without_the_secret(tls_cfg, pki):
    cfg = tls_cfg(**{"mqtt.tls_key_file": str(pki / "client-encrypted.key"), "mqtt.tls_key_password": WRONG_PASSWORD})
    assert WRONG_PASSWORD not in dump_config(cfg)
    with pytest.raises(PublishError, match="check mqtt.tls_key_password") as err:
        MqttSink(cfg)
    assert WRONG_PASSWORD not in str(err.value)


def test_key_passphrase_without_a_key_is_a_config_error(pki):
    with pytest.raises(ConfigError, match="mqtt.tls_key_password: is the passphrase of mqtt.tls_key_file"):
        load_config(os.devnull, {"mqtt.tls_ca_file": str(pki / "ca.crt"), "mqtt.tls_key_password": "x"}, {})


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_an_unloadable_tls_key_exits_2_so_systemd_does_not_restart_in_a_loop(pki, tmp_path, command):
    """check-config is the unit's ExecStartPre: it loads the TLS files, and connects to nothing."""
    config = tmp_path / "config.toml"
    config.write_text(f'[mqtt]\nhost = "127.0.0.1"\nport = 1\ntls_ca_file = "{pki / "ca.crt"}"\n'
                      f'tls_cert_file = "{pki / "client.crt"}"\ntls_key_file = "{pki / "client-encrypted.key"}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_FER_")}
    result = subprocess.run([sys.executable, "-m", "edge_fer.cli", command, "--config", str(config)],
                            capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "mqtt.tls_key_file is encrypted: set its passphrase in mqtt.tls_key_password" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_stop_during_the_tls_handshake_leaves_no_connection_to_fire_the_will(tls_broker, tls_cfg, pki):
    """A reload that changes the client id while paho is inside the TLS handshake, where stop cannot
    reach it: when the broker answers later, paho's thread still sends CONNECT (with our will) and
    ends. That connection must end with a DISCONNECT the broker reads, or its will ("offline") fires
    over the new sink's "online": when the socket finally closes (garbage collection, process exit),
    or at once if it is reset before the broker got to the DISCONNECT (it is, when closed with
    unread data: the TLS session tickets, the CONNACK)."""
    relay = HeldRelay(tls_broker)
    try:
        old_cfg = tls_cfg(**{"mqtt.port": relay.port, "mqtt.client_id": "edge-fer-old"})
        sub = tls_broker.subscriber([f"{old_cfg.mqtt.prefix}/+/available"], configure=secure(pki))
        old = MqttSink(old_cfg)
        old.start()
        old.announce()  # as the daemon does at its first frame
        assert relay.accepted.wait(WAIT_S)
        old.stop("SIGHUP")  # returns: paho's thread is still waiting for the server's hello
        new = MqttSink(tls_cfg(**{"mqtt.prefix": old_cfg.mqtt.prefix, "mqtt.client_id": "edge-fer-new"}))
        new.start()
        new.announce()  # as the daemon does at its first frame
        try:
            assert new.wait_connected(WAIT_S) and new.flush(WAIT_S)
            relay.release()  # the broker answers the abandoned handshake
            broker_log_line(tls_broker, r"as edge-fer-old \(")
            # mosquitto's words for how a connection ended; only a DISCONNECT read discards the will
            ended = broker_log_line(tls_broker, r"(Client edge-fer-old (disconnected|closed)|"
                                                r"Socket error on client edge-fer-old|"
                                                r"Bad socket read/write on client edge-fer-old).*$")
            assert ended == "Client edge-fer-old disconnected.", tls_broker.log()
            relay.close()  # what is left of the old socket closes, as it would when collected or at exit
        finally:
            new.stop()
        # The new sink's "stopped" comes after anything the old connection's end set off.
        assert sub.wait_for(lambda msgs: [m.json["status"] for m in msgs][-1:] == ["stopped"])
        assert [m.json["status"] for m in sub.messages] == ["online", "stopped"], tls_broker.log()
    finally:
        relay.close()
        sub.close()


def test_plain_mqtt_to_a_tls_port_says_to_set_tls(tls_broker, caplog):
    """The port takes TCP, then hangs up on the plaintext CONNECT: paho reports no connect
    failure for that, so without this log line the daemon would retry in silence."""
    cfg = load_config(os.devnull, {"mqtt.host": tls_broker.host, "mqtt.port": tls_broker.port,
                                   "mqtt.prefix": f"t{uuid.uuid4().hex[:10]}"}, {})
    caplog.set_level(logging.WARNING, logger="edge_fer.publish.mqtt")
    sink = MqttSink(cfg, reconnect_s=(1, 1), stop_timeout_s=0.1)
    sink.start()
    sink.announce()  # as the daemon does at its first frame
    try:
        record = wait_for_log(caplog, "closed before the broker answered")
        time.sleep(2.5)  # retries
        assert not sink.connected
    finally:
        sink.stop()
    assert record.levelno == logging.ERROR
    assert "A TLS port (usually 8883) needs mqtt.tls_ca_file" in record.getMessage()
    assert sum("closed before the broker answered" in r.getMessage() for r in caplog.records) == 1


def test_tls_to_a_plain_port_says_which_port_is_tls(tls_cfg, mqtt_broker, caplog):
    caplog.set_level(logging.WARNING, logger="edge_fer.publish.mqtt")
    sink = MqttSink(tls_cfg(**{"mqtt.port": mqtt_broker.port}), reconnect_s=(1, 1), stop_timeout_s=0.1)
    sink.start()
    sink.announce()  # as the daemon does at its first frame
    try:
        record = wait_for_log(caplog, "cannot connect to MQTT broker")
    finally:
        sink.stop()
    assert "TLS" in record.getMessage() and "8883" in record.getMessage(), record.getMessage()
