"""Always the newest frame: a reader thread, one slot, and reconnection that never gives up.

The reader overwrites a single slot; a frame replaced before anyone read it is counted in
``dropped_frames``. When inference falls behind, frames are shed, never queued (Coral's
``max-buffers=1 drop=true``; picamera2 keeps one request the same way).

A supervisor thread reopens the device when a read fails or when no frame has arrived for
``stall_timeout_s`` (or MIN_STALL_FRAMES of the device's frame periods, if longer), waiting
RECONNECT_INITIAL_S, then twice as long each failure, up to RECONNECT_MAX_S. The wait starts again
from RECONNECT_INITIAL_S only after the source delivered frames for a whole stall timeout (or played
a file through): a device that opens, gives a frame and fails is still failing. A reader stuck
inside a driver call is abandoned rather than interrupted (no backend can be interrupted safely);
it closes its own device if the call ever returns.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Protocol
from collections.abc import Callable

import numpy as np

from edge_fer.capture.base import Frame
from edge_fer.errors import SourceUnavailable

log = logging.getLogger(__name__)

RECONNECT_INITIAL_S = 0.5  # first wait before reopening a lost source
RECONNECT_MAX_S = 30.0  # backoff ceiling: a camera that comes back is picked up within 30 s
MIN_STALL_FRAMES = 3  # a slow frame rate must not look like a stall: wait at least this many periods
CLOSE_JOIN_S = 0.5  # how long close() waits for the threads; a thread stuck in a driver is a daemon
# and is abandoned: SIGTERM must end the process within 2 s (issue 5) even with a hung camera
READ_TIMEOUT_S = 0.25  # read() returns at least this often, so the caller's loop sees its stop flag
END_OF_INPUT = "end of input"


class Grabber(Protocol):
    """One opened device, file or stream, used by one thread at a time.

    ``period``: seconds between the frames it paces itself to (a file's rate), 0 when the device
    sets the pace; the stall timeout is stretched to MIN_STALL_FRAMES of it.
    """

    period: float

    def grab(self) -> np.ndarray | None:
        """Block for the next BGR HxWx3 image; None at end of input; raise when the device fails."""

    def close(self) -> None: ...


class LatestFrameSource:
    """A FrameSource that always returns the newest frame and reconnects by itself.

    ``opener`` opens the device and returns a Grabber, raising SourceError if it cannot. It is
    called once here, so a bad source fails at start-up, and again on every reconnect. With
    ``wait``, a device that is not there yet (SourceUnavailable) is not an error: it is reopened
    with backoff, as if it had been lost.
    """

    def __init__(self, name: str, opener: Callable[[], Grabber], *, loop: bool = False,
                 stall_timeout_s: float = 5.0, reconnect_initial_s: float = RECONNECT_INITIAL_S,
                 reconnect_max_s: float = RECONNECT_MAX_S, wait: bool = False):
        self.name = name
        self._opener = opener
        self._loop = loop
        self._stall_timeout_s = stall_timeout_s
        self._reconnect_initial_s = reconnect_initial_s
        self._reconnect_max_s = reconnect_max_s
        self._cond = threading.Condition()
        self._slot: tuple[np.ndarray, float] | None = None  # newest unread (image, capture time)
        self._last_frame_time: float | None = None  # monotonic, of the newest captured frame
        self._captured = 0
        self._delivered = 0
        self._dropped = 0
        self._ended = False
        self._closed = False
        self._generation = 0  # bumped to retire a reader
        self._trouble: str | None = None  # why the current reader stopped, or END_OF_INPUT
        self._reader: threading.Thread | None = None
        grabber: Grabber | None = None
        try:
            grabber = opener()
        except SourceUnavailable as exc:
            if not wait:
                raise
            log.warning("capture %s: %s; waiting for it (retrying in %g s)", name, exc, reconnect_initial_s)
        self._supervisor = threading.Thread(target=self._supervise, args=(grabber,),
                                            name=f"capture-{name}", daemon=True)
        self._supervisor.start()

    @property
    def dropped_frames(self) -> int:
        """Frames captured but overwritten by a newer one before read() took them."""
        return self._dropped

    @property
    def ended(self) -> bool:
        """True once a file without ``loop`` has ended (a pending frame may still be read)."""
        return self._ended

    def read(self, timeout: float | None = READ_TIMEOUT_S) -> Frame | None:
        """The newest frame not yet returned, waiting up to ``timeout`` s (None: forever) for one.

        None when no frame came in time, at end of input, or after close(); ``ended`` tells
        end of input apart.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._slot is not None or self._ended or self._closed, timeout)
            if self._slot is None:
                return None
            image, stamp = self._slot
            self._slot = None
            frame = Frame(image, stamp, self._delivered)
            self._delivered += 1
            return frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._generation += 1
            self._cond.notify_all()
        self._supervisor.join(CLOSE_JOIN_S)
        if self._reader is not None:  # it releases the device on its way out
            self._reader.join(CLOSE_JOIN_S)

    def released(self, timeout: float) -> bool:
        """After close(): wait up to ``timeout`` s for the threads to let go of the device. A reader
        inside a slow grab (a 1 fps camera) still holds it when close() returns; a camera with one
        owner at a time cannot be opened again until it lets go."""
        deadline = time.monotonic() + timeout
        for thread in (self._supervisor, self._reader):
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t is not None and t.is_alive() for t in (self._supervisor, self._reader))

    def __enter__(self) -> LatestFrameSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _supervise(self, grabber: Grabber | None) -> None:
        """Run one reader after another until end of input or close(); None: not opened yet."""
        delay = self._reconnect_initial_s
        if grabber is None:  # waited for: the first retry after the initial wait, as after a loss
            grabber, delay = self._reopen(delay, min(delay * 2, self._reconnect_max_s), "opened")
            if grabber is None:
                return
        while True:
            captured_before = self._captured
            started = time.monotonic()
            stall_s = max(self._stall_timeout_s, MIN_STALL_FRAMES * grabber.period)
            reason = self._run_reader(grabber, stall_s)
            if reason is None:  # closed
                return
            got_frames = self._captured > captured_before
            # Only a real run resets the backoff (frames for a whole stall timeout, or a file played
            # through): a device that gives the opener's probe frame and then fails is still failing.
            if got_frames and (reason == END_OF_INPUT or self._last_frame_time - started >= stall_s):
                delay = self._reconnect_initial_s
            if reason == END_OF_INPUT and not self._loop:
                with self._cond:
                    self._ended = True
                    self._cond.notify_all()
                log.info("capture %s: end of input", self.name)
                return
            if reason == END_OF_INPUT and got_frames:
                wait = 0.0  # loop: start again at once
            else:  # a failure, a stall, or a file that ended before its first frame
                wait, delay = delay, min(delay * 2, self._reconnect_max_s)
                log.warning("capture %s: %s; reopening in %g s", self.name, reason, wait)
            grabber, delay = self._reopen(wait, delay, "reopened" if wait else None)
            if grabber is None:
                return

    def _reopen(self, wait: float, delay: float, done: str | None) -> tuple[Grabber | None, float]:
        """Open again after ``wait`` s, doubling the wait after each failure: (grabber, next
        delay), or (None, delay) once closed. Success is logged as ``done`` (or "reopened" after a
        failure here): the end of a problem the log told."""
        while True:
            with self._cond:
                if self._cond.wait_for(lambda: self._closed, wait):
                    return None, delay
            try:
                grabber = self._opener()
                if done:
                    log.info("capture %s: %s", self.name, done)
                return grabber, delay
            # SourceError is the expected case; camera stacks may raise anything else, and
            # letting it end this thread would stop frames for good.
            except Exception as exc:  # noqa: BLE001
                wait, delay, done = delay, min(delay * 2, self._reconnect_max_s), done or "reopened"
                log.warning("capture %s: reopen failed (%s); retrying in %g s", self.name, exc, wait)

    def _run_reader(self, grabber: Grabber, stall_s: float) -> str | None:
        """Start a reader on ``grabber``; wait until it stops or is silent for ``stall_s``. None: closed."""
        with self._cond:
            if self._closed:  # close() came while the device was being opened
                grabber.close()
                return None
            self._generation += 1
            generation = self._generation
            self._trouble = None
            started = time.monotonic()
            self._reader = threading.Thread(target=self._read_loop, args=(grabber, generation),
                                            name=f"capture-{self.name}-{generation}", daemon=True)
        self._reader.start()
        with self._cond:
            while True:
                if self._closed:
                    return None
                if self._trouble is not None:
                    return self._trouble
                quiet_since = max(started, self._last_frame_time or started)
                remaining = quiet_since + stall_s - time.monotonic()
                if remaining <= 0:
                    self._generation += 1  # retire the stuck reader
                    return f"stalled (no frame for {stall_s:g} s)"
                self._cond.wait(remaining)

    def _read_loop(self, grabber: Grabber, generation: int) -> None:
        try:
            while True:
                try:
                    image = grabber.grab()
                # Camera stacks raise whatever they like (cv2.error, RuntimeError, OSError); any of
                # them means "reopen", never "crash".
                except Exception as exc:  # noqa: BLE001
                    with self._cond:
                        if generation == self._generation:
                            self._trouble = f"read failed ({exc})"
                            self._cond.notify_all()
                    return
                now = time.monotonic()
                with self._cond:
                    if generation != self._generation:
                        return
                    if image is None:
                        self._trouble = END_OF_INPUT
                        self._cond.notify_all()
                        return
                    if self._slot is not None:
                        self._dropped += 1
                    self._slot = (image, now)
                    self._captured += 1
                    self._last_frame_time = now
                    self._cond.notify_all()
        finally:
            try:
                grabber.close()
            except Exception as exc:  # noqa: BLE001 - a vanished device may fail to close; nothing to do
                log.warning("capture %s: closing failed (%s)", self.name, exc)
