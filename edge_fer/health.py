"""Tell systemd when edge-fer is ready, alive and leaving: sd_notify(3) and the watchdog.

The main loop uses it in a few lines::

    notifier = Notifier()
    watchdog = Watchdog(notifier)
    notifier.ready("fps=0.0 faces=0")
    while not stopping:
        result = pipeline.step(frame, time.time())
        watchdog.frame_done(time.monotonic(), status=lambda: f"fps={fps:.1f} faces={len(result.faces)}")
    notifier.stopping()

Pings follow processed frames, not a timer thread: a hung camera or a stuck inference stops
them and systemd restarts the service. Outside systemd (no $NOTIFY_SOCKET) everything is a
no-op. systemd-python is used when importable; otherwise the datagram is sent directly.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

WATCHDOG_PING_FRACTION = 0.5
"""Ping every WATCHDOG_USEC * this; sd_watchdog_enabled(3) recommends half the timeout."""

STATUS_INTERVAL_S = 5.0
"""Seconds between STATUS= updates (fps, faces) shown by `systemctl status`; a human rate."""

Sender = Callable[[str], None]


def _systemd_python_sender() -> Sender | None:
    """systemd.daemon.notify (libsystemd's sd_notify), or None when systemd-python is absent."""
    try:
        from systemd import daemon
    except ImportError:
        return None

    def send(message: str) -> None:
        if not daemon.notify(message):
            raise OSError(f"sd_notify did not send {message!r}")

    return send


def _socket_sender(address: str) -> Sender:
    """Minimal sd_notify: one AF_UNIX datagram; '@' marks the abstract namespace (sd_notify(3))."""
    target = "\0" + address[1:] if address.startswith("@") else address

    def send(message: str) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), target)

    return send


class Notifier:
    """sd_notify(3) messages to the service manager. Never raises: a lost message is logged once."""

    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        self.backend: str | None = None
        self._send: Sender | None = None
        self._warned = False
        if not address:
            return
        if not address.startswith(("/", "@")):
            log.warning("NOTIFY_SOCKET=%s is not a unix socket path; systemd will not hear from us", address)
            return
        sender = _systemd_python_sender()
        self.backend, self._send = ("systemd-python", sender) if sender else ("socket", _socket_sender(address))

    @property
    def enabled(self) -> bool:
        return self._send is not None

    def notify(self, *assignments: str) -> bool:
        """Send newline-joined VAR=value assignments; True if sent."""
        if self._send is None:
            return False
        try:
            self._send("\n".join(assignments))
        except OSError as exc:
            if not self._warned:
                log.warning("sd_notify failed (%s); systemd may restart us if this persists", exc)
                self._warned = True
            return False
        return True

    def ready(self, status: str) -> bool:
        """Start-up (or a reload) is complete; arms the watchdog."""
        return self.notify("READY=1", f"STATUS={status}")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def reloading(self) -> bool:
        """On SIGHUP, before re-reading the config; call ready() when done (systemd.service(5))."""
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")


def watchdog_timeout_s() -> float | None:
    """systemd's WatchdogSec= as $WATCHDOG_USEC gives it; None when unset, zero, or when
    $WATCHDOG_PID names another process (then the watchdog is someone else's: said once)."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    owner = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and owner != str(os.getpid()):
        log.warning("WATCHDOG_PID=%s is not this process (%d): not pinging systemd's watchdog, which will "
                    "kill the service after %.0f s; run edge-fer as the unit's main process (no wrapper script), "
                    "or set NotifyAccess=all", owner, os.getpid(), int(usec) / 1e6)
        return None
    return int(usec) / 1e6


def watchdog_interval_s() -> float | None:
    """Ping interval: WATCHDOG_PING_FRACTION of the timeout; None without a watchdog."""
    timeout = watchdog_timeout_s()
    return None if timeout is None else timeout * WATCHDOG_PING_FRACTION


class Watchdog:
    """The per-frame heartbeat: WATCHDOG=1 at most once per ping interval, STATUS= every
    ``status_interval_s``. Both only advance when frame_done() is called."""

    def __init__(self, notifier: Notifier, status_interval_s: float = STATUS_INTERVAL_S):
        self.notifier = notifier
        self.interval_s = watchdog_interval_s()  # None: the unit has no WatchdogSec=
        self.status_interval_s = status_interval_s
        self.last_ping: float | None = None
        self._status_since: float | None = None

    def frame_done(self, now: float, status: Callable[[], str] | None = None) -> bool:
        """Call after each processed frame with time.monotonic(); ``status`` makes the STATUS=
        text (e.g. "fps=14.8 faces=1") and is only called when one is due. True if it pinged."""
        if status is not None and self.notifier.enabled:
            if self._status_since is None:
                self._status_since = now
            elif now - self._status_since >= self.status_interval_s:
                self._status_since = now
                self.notifier.status(status())
        if self.interval_s is None or (self.last_ping is not None and now - self.last_ping < self.interval_s):
            return False
        self.last_ping = now
        return self.notifier.watchdog()
