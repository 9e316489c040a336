"""The sink interface, its buffered base, and the two brokerless sinks (memory, stdout)."""
from __future__ import annotations

import abc
import json
import logging
import sys
import threading
import time
from typing import TextIO
from collections.abc import Callable

from edge_fer.config import Config
from edge_fer.messages import FrameResult, PipelineStats
from edge_fer.publish._outbox import Outbox
from edge_fer.publish._payloads import NO_PICTURE_REASON, STOPPED, Message, SinkCounters
from edge_fer.publish._stream import MessageStream

log = logging.getLogger("edge_fer.publish")

STOP_DRAIN_S = 1.5
"""At stop, how long queued messages may take to go out: SIGTERM must end the process within
2 s (issue 5) even while the broker is away or stdout's reader stalls."""


def drain_timeout(stop_timeout_s: float, drain_s: float | None) -> float:
    """The sink's own stop timeout, or less when the caller has less left of its stop budget."""
    return stop_timeout_s if drain_s is None else max(0.0, min(stop_timeout_s, drain_s))


class Sink(abc.ABC):
    """Where results go. ``publish_frame`` and ``publish_stats`` never block the camera loop."""

    stream: MessageStream

    @property
    def output_lost(self) -> bool:
        """True once nothing can ever be delivered again (stdout's reader exited): the run should
        end rather than classify for no one. A broker outage is not that; it ends."""
        return False

    @abc.abstractmethod
    def start(self) -> None:
        """Open the output (connect, start the writer); announces nothing yet."""

    @abc.abstractmethod
    def announce(self) -> None:
        """The daemon sees a picture (its first frame, as READY=1): ``available=online`` and the
        discovery configs, then (MQTT) again after every reconnect. Not before: with the camera away
        at start, Home Assistant must show the device unavailable, not "online, no face"."""

    @abc.abstractmethod
    def publish_frame(self, result: FrameResult) -> None: ...

    @abc.abstractmethod
    def end_tracks(self, result: FrameResult) -> None:
        """The faces end because the daemon stops looking (stop, reload): their ``gone`` events,
        no state."""

    @abc.abstractmethod
    def withdraw_discovery(self) -> None:
        """Remove this sink's Home Assistant entities (a reload that turns discovery off or
        renames or moves the device); before ``stop``."""

    @abc.abstractmethod
    def picture_lost(self, result: FrameResult, reason: str = NO_PICTURE_REASON) -> None:
        """The camera gives no picture (``reason``: none comes, or it shows nothing):
        ``available=no_picture`` and the faces' ends (``result``). The next frame calls
        ``announce`` again."""

    @abc.abstractmethod
    def publish_stats(self, stats: PipelineStats) -> None: ...

    @abc.abstractmethod
    def stop(self, reason: str = STOPPED, drain_s: float | None = None) -> list[Message]:
        """Announce ``available=stopped`` (with ``reason``), deliver what is queued within
        ``drain_s`` (at most the sink's stop timeout), release. Returns what it could not deliver,
        oldest first; a second call returns nothing."""

    @abc.abstractmethod
    def take_over(self, previous: Sink, undelivered: list[Message]) -> None:
        """Before ``start``: number on from ``previous`` and deliver its ``undelivered`` first, so a
        config reload loses nothing and keeps ``seq`` continuous."""


class MemorySink(Sink):
    """Keeps every message in ``messages``: the test seam for code that publishes."""

    def __init__(self, cfg: Config, clock: Callable[[], float] = time.time):
        self.stream = MessageStream(cfg, clock)
        self.messages: list[Message] = []

    def start(self) -> None:
        pass

    def announce(self) -> None:
        self.messages += self.stream.announcement()

    def publish_frame(self, result: FrameResult) -> None:
        self.messages += self.stream.frame(result)

    def picture_lost(self, result: FrameResult, reason: str = NO_PICTURE_REASON) -> None:
        self.messages += self.stream.picture_lost(result, reason)

    def withdraw_discovery(self) -> None:
        self.messages += self.stream.discovery_withdrawal()

    def end_tracks(self, result: FrameResult) -> None:
        self.messages += self.stream.end_tracks(result)

    def publish_stats(self, stats: PipelineStats) -> None:
        self.messages += self.stream.stats(stats, SinkCounters(0, 0, connected=True))

    def stop(self, reason: str = STOPPED, drain_s: float | None = None) -> list[Message]:
        self.messages += self.stream.available(STOPPED, reason)
        return []

    def take_over(self, previous: Sink, undelivered: list[Message]) -> None:
        self.stream.continue_after(previous.stream)
        self.messages += undelivered


class BufferedSink(Sink):
    """Queues messages in an ``Outbox`` for a delivery thread that subclasses provide."""

    def __init__(self, cfg: Config, clock: Callable[[], float] = time.time):
        self.stream = MessageStream(cfg, clock)
        self.outbox = Outbox(cfg.mqtt.buffer_size)

    @property
    @abc.abstractmethod
    def connected(self) -> bool: ...

    def publish_frame(self, result: FrameResult) -> None:
        self.outbox.push(lambda: self.stream.frame(result))

    def picture_lost(self, result: FrameResult, reason: str = NO_PICTURE_REASON) -> None:
        self.outbox.push(lambda: self.stream.picture_lost(result, reason))

    def withdraw_discovery(self) -> None:
        self.outbox.push(self.stream.discovery_withdrawal)

    def end_tracks(self, result: FrameResult) -> None:
        self.outbox.push(lambda: self.stream.end_tracks(result))

    def publish_stats(self, stats: PipelineStats) -> None:
        self.outbox.push(lambda: self.stream.stats(
            stats, SinkCounters(len(self.outbox), self.outbox.dropped, self.connected)))

    def take_over(self, previous: Sink, undelivered: list[Message]) -> None:
        self.stream.continue_after(previous.stream)
        if isinstance(previous, BufferedSink):  # stats count from start, not from the reload
            self.outbox.dropped += previous.outbox.dropped
        self.outbox.push(lambda: undelivered)


class StdoutSink(BufferedSink):
    """One JSON line per message, ``{"topic": ..., "payload": {...}}``: the no-broker mode.

    A writer thread does the writing, so a slow reader of stdout (journald) cannot stall frames.
    """

    def __init__(self, cfg: Config, out: TextIO | None = None, clock: Callable[[], float] = time.time,
                 stop_timeout_s: float = STOP_DRAIN_S):
        super().__init__(cfg, clock)
        self._out = out or sys.stdout
        self._stop_timeout_s = stop_timeout_s
        self._writer = threading.Thread(target=self._write_loop, name="edge-fer-stdout", daemon=True)
        self._lost = False

    @property
    def connected(self) -> bool:
        return self._writer.is_alive()  # False once stdout's reader is gone

    @property
    def output_lost(self) -> bool:
        return self._lost

    def start(self) -> None:
        self._writer.start()

    def announce(self) -> None:
        self.outbox.push(lambda: self.stream.announcement())

    def _write_loop(self) -> None:
        while (message := self.outbox.take()) is not None:
            try:
                self._out.write(json.dumps({"topic": message.topic, "payload": message.payload}) + "\n")
                self._out.flush()
            except (OSError, ValueError) as exc:  # reader gone (EPIPE) or stream closed
                log.error("cannot write to stdout (%s): no more messages are written", exc)
                self._lost = True
                self.outbox.drain()
                return

    def stop(self, reason: str = STOPPED, drain_s: float | None = None) -> list[Message]:
        self.outbox.push(lambda: self.stream.available(STOPPED, reason))
        self.outbox.close()
        if self._writer.is_alive():  # a writer blocked on a full pipe is a daemon thread: left behind
            self._writer.join(drain_timeout(self._stop_timeout_s, drain_s))
        return self.outbox.drain()
