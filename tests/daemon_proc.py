"""A real ``edge-fer run`` subprocess for fault tests, with the service manager's view of it.

``Daemon`` starts ``python -m edge_fer.cli run --config <toml>`` in a clean environment (no
inherited NOTIFY_SOCKET, journal or EDGE_FER_* variables), records stdout JSON lines, stderr log
lines and every sd_notify datagram (``NotifyListener``, an AF_UNIX SOCK_DGRAM socket bound where
systemd would bind /run/systemd/notify), each with its arrival time.

``MjpegServer``: a tiny HTTP MJPEG camera (multipart/x-mixed-replace, what IP cameras and
``mjpg-streamer`` serve) that a test can freeze: while paused, open connections get no bytes and
new ones no response, as a hung camera would behave.

Run as a script, this module is ``edge-fer`` with one real fault injected from outside the
package: ``python daemon_proc.py --fail-invoke-after N run --config ...`` makes the expression
interpreter's ``invoke()`` raise RuntimeError from its N+1-th call on, as a TFLite kernel error
would.
"""
from __future__ import annotations

import http.server
import json
import os
import re
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60.0  # model load on a busy 2-core machine; idle it is about 1 s
WAIT_S = 20.0  # default wait for one expected event
INHERITED_OFF = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "INVOCATION_ID",
                 "LISTEN_FDS", "LISTEN_PID", "CREDENTIALS_DIRECTORY")


def toml_text(config: dict[str, dict[str, Any]]) -> str:
    """A config tree of plain values as TOML (json.dumps writes valid TOML strings)."""
    lines = []
    for section, table in config.items():
        lines.append(f"[{section}]")
        for key, value in table.items():
            shown = ("true" if value else "false") if isinstance(value, bool) else json.dumps(value)
            lines.append(f"{key} = {shown}")
    return "\n".join(lines) + "\n"


def base_config(uri: str, **sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Fast, observable defaults: stats every second, a fixed device id; ``sections`` override."""
    config: dict[str, dict[str, Any]] = {
        "source": {"uri": uri, "loop": True},
        "mqtt": {"device_id": "faulty", "stats_interval_s": 1.0},
    }
    for name, table in sections.items():
        config.setdefault(name, {}).update(table)
    return config


@dataclass(frozen=True)
class Line:
    at: float  # time.monotonic() on arrival
    text: str


@dataclass(frozen=True)
class Note:
    """One sd_notify datagram: its VAR=value assignments and when it arrived."""

    at: float  # time.monotonic()
    wall: float  # time.time(), to compare with message timestamps
    fields: dict[str, str]


class NotifyListener:
    """The service manager's end of NOTIFY_SOCKET; ``messages`` in arrival order."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[Note] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, OSError):
                continue
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            with self._cond:
                self.messages.append(Note(time.monotonic(), time.time(), fields))
                self._cond.notify_all()

    def with_var(self, var: str, value: str | None = None, after: float = 0.0) -> list[Note]:
        """Messages since ``after`` that set ``var`` (to ``value``, if given)."""
        with self._cond:
            return [n for n in self.messages
                    if n.at >= after and var in n.fields and (value is None or n.fields[var] == value)]

    def times(self, var: str, value: str | None = None, after: float = 0.0) -> list[float]:
        return [n.at for n in self.with_var(var, value, after)]

    def wait_note(self, predicate: Callable[[Note], bool], after: float = 0.0, timeout: float = WAIT_S) -> Note:
        """The first message since ``after`` that satisfies ``predicate``; fails after ``timeout``."""
        def found() -> list[Note]:
            return [n for n in self.messages if n.at > after and predicate(n)]

        with self._cond:
            self._cond.wait_for(lambda: bool(found()), timeout)
            hits = found()
        assert hits, f"no matching sd_notify message within {timeout} s; got {[n.fields for n in self.messages]}"
        return hits[0]

    def wait_var(self, var: str, value: str | None = None, after: float = 0.0, count: int = 1,
                 timeout: float = WAIT_S) -> Note:
        """The ``count``-th message since ``after`` setting ``var`` (to ``value``); fails after ``timeout``."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.with_var(var, value, after)) >= count, timeout)
        found = self.with_var(var, value, after)
        assert len(found) >= count, (f"{count} x {var}={value or '*'} not received within {timeout} s; "
                                     f"got {[n.fields for n in self.messages]}")
        return found[count - 1]

    def close(self) -> None:
        self._closed = True
        self._thread.join(1.0)
        self.sock.close()
        self.path.unlink(missing_ok=True)


class Daemon:
    """One ``edge-fer run`` process. Call ``stop()`` (or use the ``daemon`` fixture) to reap it."""

    def __init__(self, config_path: Path, *, cwd: Path, notify: NotifyListener | None = None,
                 watchdog_usec: int | None = None, env: dict[str, str] | None = None,
                 argv: list[str] | None = None, extra_args: list[str] | None = None,
                 wrapper: list[str] | None = None):
        """``argv``: what runs the CLI (default ``-m edge_fer.cli``); ``extra_args`` follow
        ``run --config FILE``; ``wrapper`` goes before the interpreter (e.g. strace)."""
        self.config_path = config_path
        environment = {k: v for k, v in os.environ.items()
                       if k not in INHERITED_OFF and not k.startswith("EDGE_FER_")}
        environment.update(PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
        if notify is not None:
            environment["NOTIFY_SOCKET"] = str(notify.path)
        if watchdog_usec is not None:
            environment["WATCHDOG_USEC"] = str(watchdog_usec)
        environment.update(env or {})
        command = (wrapper or []) + [sys.executable, *(argv or ["-m", "edge_fer.cli"]),
                                     "run", "--config", str(config_path), *(extra_args or [])]
        self.stdout: list[Line] = []
        self.stderr: list[Line] = []
        self._cond = threading.Condition()
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(command, cwd=cwd, env=environment, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        self._readers = [threading.Thread(target=self._pump, args=(stream, store), daemon=True)
                         for stream, store in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr))]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump(self, stream, store: list[Line]) -> None:
        for text in stream:
            with self._cond:
                store.append(Line(time.monotonic(), text.rstrip("\n")))
                self._cond.notify_all()

    # --- what it said ---------------------------------------------------------------------
    def log(self) -> str:
        with self._cond:
            return "\n".join(line.text for line in self.stderr)

    def log_times(self, pattern: str) -> list[float]:
        with self._cond:
            return [line.at for line in self.stderr if re.search(pattern, line.text)]

    def messages(self, topic_suffix: str | None = None, since: float = 0.0) -> list[dict[str, Any]]:
        """Stdout JSON lines ({"topic", "payload"}) that arrived after ``since``."""
        out = []
        with self._cond:
            lines = [line for line in self.stdout if line.at >= since]
        for line in lines:
            try:
                message = json.loads(line.text)
            except json.JSONDecodeError:
                continue
            if topic_suffix is None or message["topic"].endswith("/" + topic_suffix):
                out.append(message)
        return out

    def wait_log(self, pattern: str, timeout: float = WAIT_S, after: float = 0.0) -> float:
        """Arrival time of the first stderr line matching ``pattern`` at or after ``after``."""
        found: list[float] = []

        def seen() -> bool:
            found[:] = [line.at for line in self.stderr if line.at >= after and re.search(pattern, line.text)]
            return bool(found) or self.proc.poll() is not None

        with self._cond:
            self._cond.wait_for(seen, timeout)
        if not found:  # one more look: the process may have written it just before exiting
            time.sleep(0.2)
            found = [t for t in self.log_times(pattern) if t >= after]
        assert found, f"no log line matching {pattern!r} within {timeout} s; log:\n{self.log()}"
        return found[0]

    def wait_messages(self, predicate: Callable[[list[dict[str, Any]]], bool], topic_suffix: str | None = None,
                      since: float = 0.0, timeout: float = WAIT_S) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.messages(topic_suffix, since)
            if predicate(got):
                return got
            assert time.monotonic() < deadline, (f"stdout never satisfied the check within {timeout} s; "
                                                 f"{len(got)} messages; log:\n{self.log()}")
            assert self.proc.poll() is None, f"daemon exited {self.proc.returncode}; log:\n{self.log()}"
            time.sleep(0.05)

    # --- what we do to it -----------------------------------------------------------------
    def signal(self, signum: int) -> float:
        sent = time.monotonic()
        self.proc.send_signal(signum)
        return sent

    def wait(self, timeout: float = WAIT_S) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"daemon still running after {timeout} s; log:\n{self.log()}") from None
        for reader in self._readers:
            reader.join(5.0)
        return rc

    def stop(self) -> None:
        """Reap it whatever state it is in (test teardown)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10.0)
        for reader in self._readers:
            reader.join(5.0)


class MjpegServer:
    """An HTTP MJPEG camera at ``url`` serving ``jpeg`` at ``fps``; ``pause()`` freezes it."""

    BOUNDARY = b"frame"

    def __init__(self, jpeg: bytes, fps: float = 15.0):
        self._jpeg = jpeg
        self._period = 1.0 / fps
        self._running = threading.Event()
        self._running.set()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                server._running.wait()  # a frozen camera does not even answer
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=" + server.BOUNDARY.decode())
                self.end_headers()
                try:
                    while True:
                        server._running.wait()
                        self.wfile.write(b"--" + server.BOUNDARY + b"\r\nContent-Type: image/jpeg\r\n"
                                         + b"Content-Length: %d\r\n\r\n" % len(server._jpeg)
                                         + server._jpeg + b"\r\n")
                        time.sleep(server._period)
                except OSError:  # the client went away (it reconnects on its own)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/stream.mjpg"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def close(self) -> None:
        self._running.set()  # release blocked handlers
        self._httpd.shutdown()
        self._httpd.server_close()


# --- script mode: edge-fer with a failing interpreter -----------------------------------------

class _FailingInterpreter:
    """Wraps the real interpreter; ``invoke`` raises from call ``ok_calls + 1`` on."""

    def __init__(self, real: Any, ok_calls: int):
        self._real = real
        self._left = ok_calls

    def invoke(self) -> None:
        if self._left <= 0:
            raise RuntimeError("tensorflow/lite/kernels/conv.cc: Node number 3 (CONV_2D) failed to invoke")
        self._left -= 1
        self._real.invoke()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _main_with_failing_invoke(argv: list[str]) -> int:
    ok_calls = int(argv[1])
    import edge_fer.classify as classify
    from edge_fer import cli
    from edge_fer.interpreter import LoadedModel, load_model

    def failing_load_model(*args: Any, **kwargs: Any) -> LoadedModel:
        loaded = load_model(*args, **kwargs)
        return LoadedModel(_FailingInterpreter(loaded.interpreter, ok_calls), loaded.backend, loaded.path)

    classify.load_model = failing_load_model  # only the expression classifier, not the detector
    return cli.main(argv[2:])


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "--fail-invoke-after":
        sys.exit("usage: daemon_proc.py --fail-invoke-after N run --config FILE")
    sys.exit(_main_with_failing_invoke(sys.argv[1:]))
