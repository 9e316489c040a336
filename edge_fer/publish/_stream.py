"""Turn pipeline output into the messages one privacy mode allows, numbered in one sequence.

The per-device state both sinks need lives here and nowhere else: the ``seq`` counter, the last
state (to publish on change and as a heartbeat) and the aggregate window. Not thread-safe: a
sink calls it under its own lock, so that ``seq`` order is queue order.
"""
from __future__ import annotations

import math
import time
from typing import Any
from collections.abc import Callable

from edge_fer.config import Config
from edge_fer.messages import FrameResult, PipelineStats
from edge_fer.publish import _payloads as p
from edge_fer.publish._aggregate import AggregateWindow
from edge_fer.publish._discovery import discovery, withdrawal

STATE_EXPIRY_HEARTBEATS = 3
"""A retained state expires on the broker after this many heartbeats: a consumer arriving
after the daemon died sees no stale faces."""
AGGREGATE_EXPIRY_WINDOWS = 2
"""A retained window expires after this many windows: one that is not followed (too few faces
since, or the daemon gone) stops being shown."""


class MessageStream:
    def __init__(self, cfg: Config, clock: Callable[[], float] = time.time):
        self.topics = p.Topics.of(cfg.mqtt.prefix, cfg.mqtt.device_id)
        self._cfg = cfg
        self._clock = clock
        self._mode = cfg.privacy.mode
        self._heartbeat_s = cfg.mqtt.state_heartbeat_s
        self._aggregate = AggregateWindow(cfg.privacy.aggregate_window_s, cfg.privacy.k_min)
        self._expiry_s = {"state": math.ceil(self._heartbeat_s * STATE_EXPIRY_HEARTBEATS),
                          "aggregate": math.ceil(cfg.privacy.aggregate_window_s * AGGREGATE_EXPIRY_WINDOWS)}
        self._seq = 0
        self._state: dict[str, Any] | None = None
        self._legacy_discovery_cleared = False
        self._first_state_held_since: float | None = None
        self._state_sent_at = -math.inf
        self._state_changed_at = 0.0

    def continue_after(self, previous: MessageStream) -> None:
        """Number on from a replaced stream (config reload): a seq that restarts means a restart."""
        self._seq = previous._seq

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def announcement(self, clear_legacy: bool = False) -> list[p.Message]:
        """``available=online`` and the discovery configs: what a sink says once the daemon is up."""
        return self.available(p.ONLINE) + self.discovery(clear_legacy)

    def available(self, status: str, reason: str | None = None) -> list[p.Message]:
        return [p.available(self.topics, status, self._next_seq(), self._clock(), reason)]

    def last_will(self) -> p.Message:
        return p.last_will(self.topics)

    def discovery(self, clear_legacy: bool = False) -> list[p.Message]:
        """``clear_legacy``: clear the old layout's topics again (the first clearing may have been
        dropped from a full queue); they are cleared with the first discovery anyway."""
        ha = self._cfg.homeassistant
        if not ha.discovery:
            return []
        clear_legacy, self._legacy_discovery_cleared = clear_legacy or not self._legacy_discovery_cleared, True
        return discovery(ha.prefix, self.topics, self._cfg.mqtt.device_id, self._mode, self._expiry_s, clear_legacy)

    def picture_lost(self, result: FrameResult, reason: str) -> list[p.Message]:
        """``blind_announcement``, then the ends of the faces (``end_tracks``)."""
        return self.blind_announcement(reason) + self.end_tracks(result)

    def blind_announcement(self, reason: str, clear_legacy: bool = False) -> list[p.Message]:
        """``available=no_picture`` with ``reason``, and the discovery configs: a camera covered
        from the start still gets its (unavailable) entities in Home Assistant."""
        return self.available(p.NO_PICTURE, reason) + self.discovery(clear_legacy)

    def end_tracks(self, result: FrameResult) -> list[p.Message]:
        """The faces' ends (``result``: no face, the tracker's ``gone`` events) when the daemon
        stops looking (picture lost, stop, reload), not because they left: no state, which would
        claim that nobody is there. The retained one expires; the next state goes out whatever it says."""
        messages = []
        if self._mode == "aggregate":
            messages = self._aggregate_window(result)
        elif self._mode == "labels":
            messages = [p.expression(self.topics, event, self._next_seq()) for event in result.events]
        self._state, self._first_state_held_since = None, None
        return messages

    def discovery_withdrawal(self) -> list[p.Message]:
        ha = self._cfg.homeassistant
        return withdrawal(ha.prefix, self._cfg.mqtt.device_id) if ha.discovery else []

    def frame(self, result: FrameResult) -> list[p.Message]:
        if self._mode == "aggregate":
            return self._aggregate_window(result)
        messages = []
        if self._mode == "labels":
            messages = [p.expression(self.topics, event, self._next_seq()) for event in result.events]
        return messages + self._state_update(result)

    def _state_update(self, result: FrameResult) -> list[p.Message]:
        """A state message when the content changed, or as a heartbeat when it did not.

        Timed on the wall clock, which the frame carries; if that clock steps back (NTP on a Pi
        without a real-time clock), the heartbeat goes out at once rather than after the step,
        or the retained state would expire in between."""
        now = result.timestamp
        if self._state is None and result.detected and not result.faces:
            # The first state (at start, or with the picture back) while a face is in view but not
            # yet confirmed (track.CONFIRM_HITS) would say "no face": Home Assistant would show
            # off -> on at every start. Held until the face is confirmed, for a heartbeat at most.
            self._first_state_held_since = self._first_state_held_since or now
            if 0 <= now - self._first_state_held_since < self._heartbeat_s:
                return []
        content = p.state_content(result.faces, with_labels=self._mode == "labels",
                                  previous_dominant=(self._state or {}).get("dominant"))
        if content != self._state:
            self._state, self._state_changed_at = content, now
        elif 0 <= now - self._state_sent_at < self._heartbeat_s:
            return []
        self._state_sent_at = now
        return [p.state(self.topics, content, self._next_seq(), now, self._state_changed_at, self._expiry_s["state"])]

    def _aggregate_window(self, result: FrameResult) -> list[p.Message]:
        closed = self._aggregate.add(result)
        if closed is None:
            return []
        return [p.aggregate(self.topics, closed.start, closed.end, closed.labels, closed.frames, self._next_seq(),
                            result.timestamp, self._expiry_s["aggregate"])]

    def stats(self, stats: PipelineStats, sink: p.SinkCounters) -> list[p.Message]:
        return [p.stats(self.topics, stats, sink, self._mode, self._next_seq(), self._clock())]
