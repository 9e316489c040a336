"""A bounded, in-order queue between the camera thread and a delivery thread.

``push`` never waits for delivery: when the queue is full the OLDEST message is dropped and
counted, so a long outage costs history, not memory or frame rate. Messages are built inside
``push`` under the lock, so the ``seq`` they carry is their queue order.
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable

from edge_fer.publish._payloads import Message


class Outbox:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.cond = threading.Condition()  # hold it to change anything a ``ready`` check reads
        self.dropped = 0
        self._queue: deque[Message] = deque()
        self._closed = False

    def __len__(self) -> int:
        with self.cond:
            return len(self._queue)

    def push(self, build: Callable[[], Iterable[Message]]) -> None:
        """Append what ``build`` returns, unless closed (messages after stop are ignored)."""
        with self.cond:
            if self._closed:
                return
            for message in build():
                if len(self._queue) >= self.capacity:
                    self._queue.popleft()
                    self.dropped += 1
                self._queue.append(message)
            self.cond.notify_all()

    def take(self, ready: Callable[[], bool] = lambda: True) -> Message | None:
        """The oldest message once ``ready()``; None once closed and nothing more can go."""
        with self.cond:
            while not (self._queue and ready()):
                if self._closed:
                    return None
                self.cond.wait()
            return self._queue.popleft()

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def close(self) -> None:
        """Refuse new messages; ``take`` still hands out what is queued, then None."""
        with self.cond:
            self._closed = True
            self.cond.notify_all()

    def drain(self) -> list[Message]:
        """Close and empty the queue at once: what no delivery thread will take, oldest first."""
        with self.cond:
            self._closed = True
            rest = list(self._queue)
            self._queue.clear()
            self.cond.notify_all()
            return rest
