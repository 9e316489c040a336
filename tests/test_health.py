"""sd_notify over a real unix datagram socket, with systemd-python and with the fallback sender."""
from __future__ import annotations

import logging
import os
import socket
import sys
import time
import uuid

import pytest

from edge_fer.health import STATUS_INTERVAL_S, WATCHDOG_PING_FRACTION, Notifier, Watchdog

try:
    import systemd.daemon  # noqa: F401
    HAVE_SYSTEMD_PYTHON = True
except ImportError:
    HAVE_SYSTEMD_PYTHON = False

WATCHDOG_USEC = 30_000_000  # the unit's WatchdogSec=30s
FPS = 15.0
RECV_TIMEOUT_S = 2.0


class Listener:
    """The service manager's end: a bound AF_UNIX datagram socket."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        sock.settimeout(RECV_TIMEOUT_S)

    def recv(self) -> list[str]:
        return self.sock.recv(4096).decode().split("\n")

    def pending(self) -> int:
        self.sock.setblocking(False)
        count = 0
        try:
            while True:
                self.sock.recv(4096)
                count += 1
        except BlockingIOError:
            return count
        finally:
            self.sock.settimeout(RECV_TIMEOUT_S)


@pytest.fixture(params=["systemd-python", "socket"])
def backend(request, monkeypatch):
    if request.param == "systemd-python":
        if not HAVE_SYSTEMD_PYTHON:
            pytest.skip("systemd-python not installed (pip install systemd-python; needs libsystemd-dev)")
    else:
        for name in ("systemd", "systemd.daemon"):
            monkeypatch.setitem(sys.modules, name, None)  # the import then raises ImportError
    return request.param


@pytest.fixture(params=["path", "abstract"])
def listener(request, tmp_path, monkeypatch):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(tmp_path / "notify.sock")
        sock.bind(address)
    else:
        name = f"edge-fer-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        address = "@" + name
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    with sock:
        yield Listener(sock)


def test_notifier_delivers_each_message(backend, listener):
    notifier = Notifier()
    assert notifier.backend == backend
    assert notifier.ready("loading done")
    assert listener.recv() == ["READY=1", "STATUS=loading done"]
    assert notifier.status("fps=14.8 faces=1")
    assert listener.recv() == ["STATUS=fps=14.8 faces=1"]
    assert notifier.watchdog()
    assert listener.recv() == ["WATCHDOG=1"]
    assert notifier.stopping()
    assert listener.recv() == ["STOPPING=1"]


def test_reloading_carries_the_monotonic_clock(backend, listener):
    before = time.monotonic_ns() // 1000
    assert Notifier().reloading()
    reloading, monotonic = listener.recv()
    assert reloading == "RELOADING=1"
    key, _, usec = monotonic.partition("=")
    assert key == "MONOTONIC_USEC" and before <= int(usec) <= time.monotonic_ns() // 1000


def test_notifier_is_a_no_op_outside_systemd(backend, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled and notifier.backend is None
    assert not notifier.ready("x") and not notifier.watchdog()


def test_a_vanished_socket_is_logged_once_and_never_raises(backend, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    notifier = Notifier()
    with caplog.at_level(logging.WARNING, logger="edge_fer.health"):
        assert not notifier.watchdog()
        assert not notifier.watchdog()
    assert len([r for r in caplog.records if "sd_notify failed" in r.message]) == 1


def frame_times(start: float, duration_s: float, fps: float = FPS) -> list[float]:
    return [start + i / fps for i in range(round(duration_s * fps))]


def test_watchdog_pings_at_half_the_timeout_only_while_frames_flow(listener, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    watchdog = Watchdog(Notifier())
    interval = WATCHDOG_USEC / 1e6 * WATCHDOG_PING_FRACTION
    timeout = WATCHDOG_USEC / 1e6
    assert watchdog.interval_s == interval

    flowing = frame_times(100.0, 4 * interval)
    stall = 2 * timeout  # camera hangs: no frames at all
    resumed = frame_times(flowing[-1] + stall, 2 * interval)
    pings = [t for t in flowing + resumed if watchdog.frame_done(t)]

    assert pings[0] == flowing[0]
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert all(interval <= gap < interval + 1 / FPS for gap in gaps[:3])  # while flowing
    assert max(gaps) > timeout  # the stall outlasts WatchdogSec: systemd would have restarted us
    assert listener.pending() == len(pings)


@pytest.mark.parametrize("env", [
    {},  # no WatchdogSec=
    {"WATCHDOG_USEC": "0"},
    {"WATCHDOG_USEC": str(WATCHDOG_USEC), "WATCHDOG_PID": "1"},  # meant for another process
])
def test_watchdog_is_off_unless_meant_for_this_process(env, listener, monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    watchdog = Watchdog(Notifier())
    assert watchdog.interval_s is None
    assert not any(watchdog.frame_done(t) for t in frame_times(0.0, 60.0))
    assert listener.pending() == 0


def test_a_watchdog_meant_for_another_process_is_said_with_the_fix(monkeypatch, caplog):
    """systemd would kill the service at WatchdogSec= with nothing in the journal to say why."""
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.setenv("WATCHDOG_PID", "1")
    with caplog.at_level(logging.WARNING, logger="edge_fer.health"):
        assert Watchdog(Notifier()).interval_s is None
    assert "WATCHDOG_PID=1 is not this process" in caplog.text and "kill the service after 30 s" in caplog.text


@pytest.mark.parametrize("fps, refused", [(0.01, True), (1 / 20, True), (1 / 14, False), (0.0, False), (15.0, False)])
def test_a_source_paced_slower_than_the_watchdog_is_refused_with_the_fix(fps, refused, monkeypatch):
    """Pings follow frames: one every 20 s under WatchdogSec=30 leaves no room for a frame's jitter,
    one every 100 s would get a healthy daemon killed between frames, for ever."""
    from edge_fer.config import Config, SourceConfig
    from edge_fer.errors import ConfigError
    from edge_fer.service import check_fits_watchdog

    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    cfg, interval = Config(source=SourceConfig(fps=fps)), Watchdog(Notifier()).interval_s
    if refused:
        with pytest.raises(ConfigError, match=rf"source.fps = {fps:g} .*WatchdogSec=30.*at least 0.0666667"):
            check_fits_watchdog(cfg, interval)
    else:
        check_fits_watchdog(cfg, interval)
    check_fits_watchdog(cfg, None)  # no watchdog, nothing to fit


def test_status_line_is_refreshed_every_interval_of_frames(listener, monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)  # STATUS= only, no pings to sort out
    watchdog = Watchdog(Notifier())
    calls = []

    def status() -> str:
        calls.append(1)
        return "fps=15.0 faces=1"

    times = frame_times(50.0, 2 * STATUS_INTERVAL_S + 1)
    for t in times:
        watchdog.frame_done(t, status=status)
    assert len(calls) == 2  # the first frame starts the clock; made only when due
    assert listener.recv() == ["STATUS=fps=15.0 faces=1"]
    assert listener.recv() == ["STATUS=fps=15.0 faces=1"]
    assert listener.pending() == 0


def test_no_status_is_made_outside_systemd(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    watchdog = Watchdog(Notifier())
    for t in frame_times(0.0, 3 * STATUS_INTERVAL_S):
        watchdog.frame_done(t, status=lambda: pytest.fail("status text built with nobody to send it to"))
