"""The daemon: ordered start-up, the frame loop, signals, ordered shutdown.

Start: model -> detector -> source (first frame) -> sink -> READY=1. Loop: newest frame ->
pipeline step -> sink (never blocks) -> watchdog. SIGTERM/SIGINT finish the frame and stop
cleanly; SIGHUP re-reads the config and applies it only when valid.
"""
from __future__ import annotations

import logging
import os
import signal
import statistics
import threading
import time
from pathlib import Path
from collections import deque
from dataclasses import dataclass
from collections.abc import Callable

from edge_fer.blank import BlankWatch
from edge_fer.capture import open_source
from edge_fer.classify import ExpressionClassifier
from edge_fer.config import DEFAULT_CONFIG_PATH, Config
from edge_fer.detect import build_detector
from edge_fer.errors import ConfigError, EdgeFerError
from edge_fer.health import WATCHDOG_PING_FRACTION, Notifier, Watchdog
from edge_fer.logsetup import setup_logging
from edge_fer.messages import FrameResult, PipelineStats
from edge_fer.model_card import PACKAGED_MODEL
from edge_fer.pipeline import Pipeline
from edge_fer.publish import BLANK_PICTURE_REASON, NO_PICTURE_REASON, build_sink
from edge_fer.redact import redact_uri
from edge_fer.track import Tracker, TrackerSettings

log = logging.getLogger(__name__)

STOP_BUDGET_S = 2.0
"""From SIGTERM/SIGINT to exit (issue 5): a car's ignition-off or a kiosk's power-down waits no longer."""
STOP_RESERVE_S = 0.7
"""Of the stop budget, what comes after the queue's drain: the sink's release (paho's thread,
``STOP_JOIN_S`` = 0.3 s) and the interpreter's exit (0.2-0.4 s, measured on a loaded 2-core
machine by tests/test_faults.py, the hung-camera-and-silent-broker test)."""
FIRST_FRAME_TIMEOUT_S = 30.0
"""A camera that delivers nothing this long after start is broken; exit for systemd to retry.
Until then an absent camera is waited for (a USB camera enumerating at boot), which also makes
every restart cycle at least this plus RestartSec long: the unit's start limit never trips."""
OPEN_POLL_S = 0.1
"""While a camera opens in its own thread, how often the main thread looks for a stop signal."""
EXIT_OK, EXIT_FAILURE = 0, 1
# The ``reason`` of available=stopped: a consumer tells a deliberate stop from a crash-restart.
REASON_FAILURE, REASON_ENDED, REASON_LIMIT, REASON_RELOAD = ("pipeline failure", "source ended", "run limit",
                                                             "reload")
REASON_OUTPUT_LOST = "output lost"
FACTORY_HOSTNAMES = frozenset({"raspberrypi", "localhost", "debian", "ubuntu"})
"""Host names images ship with (Raspberry Pi OS, Debian, Ubuntu): the default mqtt.device_id is the
host name, so devices left with one share topics and an MQTT client id."""


@dataclass(frozen=True)
class RunLimits:
    max_frames: int = 0  # 0 = unlimited
    duration_s: float = 0.0  # 0 = unlimited


def model_path(cfg: Config) -> Path:
    """The expression model the config names; empty means the packaged one."""
    return Path(cfg.classifier.model) if cfg.classifier.model else PACKAGED_MODEL


def build_pipeline(cfg: Config) -> Pipeline:
    backend = None if cfg.classifier.interpreter == "auto" else cfg.classifier.interpreter
    classifier = ExpressionClassifier(model_path(cfg), detector=cfg.detector.kind,
                                      num_threads=cfg.classifier.threads, backend=backend)
    detector = build_detector(cfg.detector.kind, score_threshold=cfg.detector.score_threshold,
                              min_face_px=cfg.detector.min_face_px, max_faces=cfg.detector.max_faces,
                              nms_iou=cfg.detector.nms_iou, num_threads=cfg.classifier.threads, backend=backend)
    t = cfg.tracker
    tracker = Tracker(classifier.card.labels, TrackerSettings(t.iou_match, t.max_missed_s, t.smoothing_s,
                                                              t.switch_margin, t.switch_hold_s, t.uncertain_below,
                                                              t.uncertain_margin))
    return Pipeline(detector, classifier, tracker, max_rate_hz=cfg.classifier.max_rate_hz)


def open_configured_source(cfg: Config, wait: bool = False):
    s = cfg.source
    return open_source(s.uri, width=s.width, height=s.height, fps=s.fps or None, loop=s.loop,
                       stall_timeout_s=s.stall_timeout_s, reconnect_max_s=s.reconnect_max_s, wait=wait)


MIN_RATE_WINDOW_S = 1.0
"""A rate over a shorter window is noise (1 frame just after a reset reads as thousands of fps):
until the window is this long, ``fps`` reports the last full window's."""


PICTURE_LOST_INTERVALS = 3
"""No frame for this many of the camera's usual frame intervals, and for at least
``tracker.max_missed_s``, and the picture is lost: its faces end. A camera slower than
``max_missed_s`` (``source.fps = 0.8``, a slow stream) is not lost between two frames."""
GAPS_KEPT = 8
"""The usual interval is the median of the last this-many gaps between frames, so one late frame
or one outage does not move it."""


class _Picture:
    """Whether, and why, the camera's picture counts as lost: no frame, or frames that show
    nothing (``edge_fer.blank``), for longer than the loss threshold. Frame intervals come from
    every frame delivered, blank or not."""

    def __init__(self) -> None:
        self._gaps: deque[float] = deque(maxlen=GAPS_KEPT)
        self._delivered: float | None = None  # the newest frame, blank or not
        self._seen: float | None = None  # the newest frame that showed something (or the first frame)

    def frame(self, now: float, blank: bool) -> None:
        if self._delivered is not None:
            self._gaps.append(now - self._delivered)
        self._delivered = now
        if not blank or self._seen is None:
            self._seen = now

    def cause(self, now: float, max_missed_s: float, paced_interval_s: float) -> str | None:
        """Why the picture is lost now, or None. ``paced_interval_s``: 1 / source.fps (0 for the
        source's own rate), the usual interval until two frames have shown one: a 0.8 fps camera
        was "lost" after its first frame. With neither, nothing is lost before a second frame."""
        if self._delivered is None or not (self._gaps or paced_interval_s):
            return None
        usual = statistics.median(self._gaps) if self._gaps else paced_interval_s
        threshold = max(max_missed_s, PICTURE_LOST_INTERVALS * usual)
        if now - self._delivered > threshold:
            return NO_PICTURE_REASON
        if now - self._seen > threshold:
            return BLANK_PICTURE_REASON
        return None


class _Rate:
    """Frames and stage times over the current stats window."""

    def __init__(self, now: float):
        self.previous_fps = 0.0
        self._clear(now)

    def reset(self, now: float) -> None:
        self.previous_fps = self.fps(now)
        self._clear(now)

    def _clear(self, now: float) -> None:
        self.start, self.frames, self.detect_ms, self.classify_ms, self.classified = now, 0, 0.0, 0.0, 0

    def add(self, pipeline: Pipeline) -> None:
        self.frames += 1
        self.detect_ms += pipeline.times.detect_ms
        if pipeline.times.classified:
            self.classified += 1
            self.classify_ms += pipeline.times.classify_ms

    def fps(self, now: float) -> float:
        elapsed = now - self.start
        return self.frames / elapsed if elapsed >= MIN_RATE_WINDOW_S else self.previous_fps


TLS_FILE_KEYS = ("tls_ca_file", "tls_cert_file", "tls_key_file")
"""With classifier.model, the settings naming files the daemon reads once: a reload re-reads them
when they changed in place (a renewed certificate, a retrained model copied over the old one), not
only when the path did."""


def file_fingerprints(cfg: Config) -> dict[str, tuple]:
    """Per section, (path, mtime, size, inode) of each file it names; the packaged model stands in
    for an empty classifier.model."""
    def stamp(path: str) -> tuple:
        try:
            st = os.stat(path)
        except OSError:
            return (path, None)
        return (path, st.st_mtime_ns, st.st_size, st.st_ino)

    mqtt = [getattr(cfg.mqtt, key) for key in TLS_FILE_KEYS]
    return {"classifier": (stamp(str(model_path(cfg))),), "mqtt": tuple(stamp(p) for p in mqtt if p)}


def _entities(cfg: Config) -> tuple | None:
    """Where the Home Assistant entities live (None: no discovery)."""
    if not cfg.homeassistant.discovery:
        return None
    return cfg.mqtt.host, cfg.mqtt.port, cfg.homeassistant.prefix, cfg.mqtt.device_id


def _audience(cfg: Config) -> tuple:
    """Where the messages go and in what form (broker, topics, privacy mode): after a reload that
    changes it, a track that went on would have no "appeared" there."""
    privacy = cfg.privacy
    form = (privacy.mode, privacy.aggregate_window_s, privacy.k_min) if privacy.mode == "aggregate" else privacy.mode
    return cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.prefix, cfg.mqtt.device_id, form


def check_fits_watchdog(cfg: Config, ping_interval_s: float | None) -> None:
    """Pings follow processed frames, so a source paced slower than systemd's watchdog would get a
    healthy daemon killed between frames, forever: refused. A stall timeout longer than it still
    recovers, by a restart instead of a reconnect: said. ``ping_interval_s``: the Watchdog's."""
    if ping_interval_s is None:
        return
    timeout = ping_interval_s / WATCHDOG_PING_FRACTION
    if cfg.source.fps and 1 / cfg.source.fps > ping_interval_s:  # the other half is a frame's jitter
        raise ConfigError(f"source.fps = {cfg.source.fps:g} gives a frame every {1 / cfg.source.fps:g} s, but the "
                          f"unit's watchdog (WatchdogSec={timeout:g}) kills the service after {timeout:g} s without "
                          f"one: set source.fps to at least {1 / ping_interval_s:g}, or raise WatchdogSec= "
                          "(systemctl edit edge-fer)")
    if cfg.source.stall_timeout_s > ping_interval_s:
        log.warning("source.stall_timeout_s = %g is over half the unit's WatchdogSec=%g: a stalled camera is "
                    "restarted by the watchdog before it is reconnected", cfg.source.stall_timeout_s, timeout)


class Daemon:
    def __init__(self, cfg: Config, limits: RunLimits = RunLimits(), reload: Callable[[], Config] | None = None):
        self.cfg = cfg
        self.limits = limits
        self._reload = reload
        self._stop = False
        self._stop_reason = REASON_LIMIT
        self._stop_at: float | None = None  # monotonic time of the stop signal
        self._dropped_before = 0  # dropped frames of sources closed by a reload
        self._ready = False  # READY=1 sent: the first frame was processed
        self._figures: tuple[float, int] = (0.0, 0)  # last STATUS= fps and faces
        self._blind: str | None = None  # while the picture is lost (available=no_picture): why
        self._online = False  # available=online said, and not taken back by a lost picture
        self._files = file_fingerprints(cfg)  # as the running parts read them
        self.frames = 0
        self._hup = False
        self.notifier = Notifier()
        self.watchdog = Watchdog(self.notifier)

    # --- signals ---------------------------------------------------------------------------
    def _on_stop(self, signum, _frame) -> None:
        name = signal.Signals(signum).name
        log.info("received %s: finishing the current frame and stopping", name)
        self._stop, self._stop_reason, self._stop_at = True, name, time.monotonic()

    def _on_hup(self, _signum, _frame) -> None:
        self._hup = True

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    # --- start-up / reload -----------------------------------------------------------------
    def _start(self) -> None:
        check_fits_watchdog(self.cfg, self.watchdog.interval_s)
        self.pipeline = build_pipeline(self.cfg)
        log.info("model %s on %s, detector %s", model_path(self.cfg).name,
                 self.pipeline.classifier.backend, self.cfg.detector.kind)
        self.source = self._open(self.cfg, wait=True)
        if self.source is None:
            return
        self.sink = build_sink(self.cfg)
        if self.cfg.mqtt.host and self.cfg.mqtt.device_id in FACTORY_HOSTNAMES:
            log.warning("mqtt.device_id is %r, a factory host name: a second device with it would publish to the "
                        "same topics and take over this one's MQTT session, each dropping the other every second; "
                        "set mqtt.device_id (or the host name) to something unique", self.cfg.mqtt.device_id)
        if not self.cfg.mqtt.host and os.environ.get("INVOCATION_ID"):  # under systemd, stdout is discarded
            log.warning("mqtt.host is empty: no broker, and the unit discards stdout (StandardOutput=null, so no "
                        "labels are stored in the journal): set mqtt.host in %s", DEFAULT_CONFIG_PATH)
        self.sink.start()

    def _open(self, cfg: Config, wait: bool):
        """open_configured_source in a thread of its own: a driver or FFmpeg call that hangs (a
        network camera that accepts and never streams) cannot hold off SIGTERM, whose handler
        runs only when the main thread is back in Python. None if a stop came first; the thread
        is then left to finish or hang on its own (it is a daemon)."""
        result: dict = {}

        def work() -> None:
            try:
                result["source"] = open_configured_source(cfg, wait=wait)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread as it is
                result["error"] = exc

        opener = threading.Thread(target=work, name="edge-fer-open-source", daemon=True)
        opener.start()
        while opener.is_alive():
            opener.join(OPEN_POLL_S)
            if self._stop and opener.is_alive():
                log.info("stopping before %s opened", redact_uri(cfg.source.uri))
                return None
        if "error" in result:
            raise result["error"]
        return result["source"]

    def _apply_reload(self) -> None:
        self._hup = False
        if self._reload is None:
            return
        self.notifier.reloading()
        try:  # build the new parts first: a part that fails leaves all of the old ones running
            new = self._reload()
            check_fits_watchdog(new, self.watchdog.interval_s)
            files = file_fingerprints(new)
            changed = {name for name in ("source", "detector", "classifier", "tracker", "mqtt", "homeassistant",
                                         "privacy", "service") if getattr(new, name) != getattr(self.cfg, name)}
            changed |= {name for name in files if files[name] != self._files[name]}
            pipeline = build_pipeline(new) if changed & {"detector", "classifier", "tracker"} else None
            sink = build_sink(new) if changed & {"mqtt", "homeassistant", "privacy"} else None
            if "source" in changed:
                self._reopen_source(new)
        except (ConfigError, EdgeFerError) as exc:
            log.error("SIGHUP: new config rejected, still running on the old one: %s", exc)
        else:
            if pipeline is not None or "source" in changed or _audience(new) != _audience(self.cfg):
                # Tracks end under the old rules, for those who saw them appear; a new camera's faces
                # are new faces. A reload of other settings (stats interval, TLS files, discovery)
                # keeps them: "gone" then "appeared" for a face still there would fire automations.
                self.sink.end_tracks(FrameResult(time.time(), [], self.pipeline.tracker.clear(time.time())))
            if pipeline is not None:
                self.pipeline = pipeline
            if sink is not None:
                if _entities(new) != _entities(self.cfg):
                    self.sink.withdraw_discovery()  # the new sink announces its own, if any
                undelivered = self.sink.stop(REASON_RELOAD)
                sink.take_over(self.sink, undelivered)
                if undelivered:
                    log.info("SIGHUP: %d undelivered message(s) carried over to the new sink", len(undelivered))
                self.sink = sink
                self.sink.start()
                if self._blind:  # the new sink says what the old one said
                    self.sink.picture_lost(FrameResult(time.time()), self._blind)
                elif self._online:
                    self.sink.announce()
            if "service" in changed:
                setup_logging(new.service.log_level)
            self.cfg, self._files = new, files
            log.info("SIGHUP: config reloaded (changed: %s)", ", ".join(sorted(changed)) or "nothing")
        if self._ready:  # before the first frame, READY=1 waits for it
            # the running figures, shown under the new config (a switch to aggregate hides the face count)
            self.notifier.ready(self._blind or self._status_text(*self._figures))

    def _reopen_source(self, new: Config) -> None:
        """Close the old source first: a camera (libcamera, V4L2) has one owner at a time. If the
        new one cannot open, the old one is reopened and the SourceError propagates; the old one
        is waited for if it is away too (a reload during an outage), as at start-up."""
        self._dropped_before += self.source.dropped_frames  # stats count from start, not from the reload
        self.source.close()
        release_by = time.monotonic() + self.cfg.source.stall_timeout_s  # a grab gives up by then
        while not self.source.released(OPEN_POLL_S) and not self._stop and time.monotonic() < release_by:
            pass
        try:
            self.source = self._open(new, wait=False)
        except EdgeFerError as exc:
            try:
                self.source = self._open(self.cfg, wait=True)
            except EdgeFerError as again:  # the old file is gone: end the run for systemd to restart
                raise RuntimeError(f"the old source cannot be reopened either: {again}") from exc
            raise

    # --- the loop ---------------------------------------------------------------------------
    def _status_text(self, fps: float, faces: int) -> str:
        """systemd's STATUS= (`systemctl status`, readable by any local user): in aggregate mode a
        live face count is exactly what the mode holds back below k_min."""
        self._figures = (fps, faces)  # for a reload's READY=1
        return f"fps={fps:.1f}" if self.cfg.privacy.mode == "aggregate" else f"fps={fps:.1f} faces={faces}"

    def _stats(self, rate: _Rate, now: float, started: float) -> PipelineStats:
        return PipelineStats(
            fps=round(rate.fps(now), 2), frames=self.frames,
            dropped_frames=self._dropped_before + (self.source.dropped_frames if self.source else 0),
            inference_ms=round(rate.classify_ms / max(rate.classified, 1), 3),
            detect_ms=round(rate.detect_ms / max(rate.frames, 1), 3), uptime_s=round(now - started, 1),
            interpreter=self.pipeline.classifier.backend)

    def _limit_reached(self, now: float, started: float) -> bool:
        """--max-frames / --duration; checked on every wake-up, frame or not."""
        return bool((self.limits.max_frames and self.frames >= self.limits.max_frames)
                    or (self.limits.duration_s and now - started >= self.limits.duration_s))

    def run(self) -> int:
        self._install_signals()
        self._start()
        if self.source is None:  # a stop signal while the camera was opening: nothing was published
            return EXIT_OK
        started = time.monotonic()
        rate, faces, status = _Rate(started), 0, EXIT_OK
        picture, blank = _Picture(), BlankWatch()
        blind_since: float | None = None  # the first of the blank frames since the last seen one
        try:
            while not self._stop and not self._limit_reached(time.monotonic(), started):
                if self._hup:
                    self._apply_reload()
                    if self._stop:  # a stop signal during the reload, maybe while a camera opened
                        break
                if self.sink.output_lost:  # `edge-fer run | head`; under systemd, a restart reattaches
                    log.warning("the output's reader is gone; stopping (exit 1)")
                    self._stop_reason, status = REASON_OUTPUT_LOST, EXIT_FAILURE
                    break
                frame = self.source.read()
                now = time.monotonic()
                if now - rate.start >= self.cfg.mqtt.stats_interval_s:  # also while frames stop: health is news then
                    self.sink.publish_stats(self._stats(rate, now, started))
                    rate.reset(now)
                if frame is None:
                    if self.source.ended:
                        log.info("source %s ended", redact_uri(self.cfg.source.uri))
                        self._stop_reason = REASON_ENDED
                        break
                    if not self._ready and now - started > FIRST_FRAME_TIMEOUT_S:
                        log.error("no frame from %s within %.0f s of start; exiting for a restart",
                                  redact_uri(self.cfg.source.uri), FIRST_FRAME_TIMEOUT_S)
                        self._stop_reason, status = REASON_FAILURE, EXIT_FAILURE
                        break
                    self._check_picture(picture, now)
                    continue
                # Covered, capped or dark: frames come, showing nothing. Checked afresh when that
                # would lose the picture: the shared verdict may be a quarter second old.
                is_blank_now = blank.blank(frame.image, now)
                if is_blank_now and self._blind is None:
                    is_blank_now = blank.blank(frame.image, now, fresh=True)
                picture.frame(now, is_blank_now)
                if is_blank_now:
                    self.frames += 1  # --max-frames counts what the camera delivers
                    self.watchdog.frame_done(now)  # the camera works; a restart would not uncover it
                    if not self._ready:
                        self._ready = True
                        self.notifier.ready(BLANK_PICTURE_REASON)
                        log.info("first frame: %s; ready", BLANK_PICTURE_REASON)
                    if blind_since is None:
                        blind_since = now
                    self._check_picture(picture, now)
                    continue
                if blind_since is not None and self._blind is None:  # a cover shorter than a loss: not time away
                    self.pipeline.tracker.excuse(now - blind_since)
                blind_since, self._blind = None, None
                result = self.pipeline.step(frame, time.time())
                if not self._online:  # "online" before this frame's messages
                    self.sink.announce()
                    self._online = True
                self.sink.publish_frame(result)
                self.frames += 1
                faces = len(result.faces)
                rate.add(self.pipeline)
                if not self._ready:
                    self._ready = True
                    self.notifier.ready(self._status_text(0.0, faces))
                    log.info("first frame processed; ready")
                self.watchdog.frame_done(now, status=lambda: self._status_text(rate.fps(now), faces))
        except Exception:
            log.exception("pipeline failed mid-run; exiting for systemd to restart")
            self._stop_reason, status = REASON_FAILURE, EXIT_FAILURE
        self._shutdown(started, rate)
        return status

    def _check_picture(self, picture: _Picture, now: float) -> None:
        """A frame that did not come, or came blank: the picture is lost once it has been so long
        (``_Picture``), and said again when the cause changes (covered, then unplugged)."""
        paced_s = 1 / self.cfg.source.fps if self.cfg.source.fps else 0.0
        cause = picture.cause(now, self.cfg.tracker.max_missed_s, paced_s)
        if cause is not None and cause != self._blind:
            self._lose_picture(cause)

    def _lose_picture(self, reason: str) -> None:
        """No picture, so no face is seen: tracks end as they would for an empty frame, and the
        device says it is blind (available=no_picture), not that nobody is there."""
        self.sink.picture_lost(FrameResult(time.time(), [], self.pipeline.tracker.clear(time.time())), reason)
        self._blind, self._online = reason, False
        self.notifier.status(reason)

    def _shutdown(self, started: float, rate: _Rate) -> None:
        """Say ``stopped``, drain the queue and close the camera at the same time (closing a stalled
        camera may wait for its driver); after a signal, all within STOP_BUDGET_S of it."""
        self.notifier.stopping()
        now = time.monotonic()
        # The faces end because the daemon stops looking: their "gone", but no state saying nobody is there.
        self.sink.end_tracks(FrameResult(time.time(), [], self.pipeline.tracker.clear(time.time())))
        self.sink.publish_stats(self._stats(rate, now, started))
        closer = threading.Thread(target=self.source.close if self.source else lambda: None,
                                  name="edge-fer-close-source", daemon=True)
        closer.start()
        deadline = None if self._stop_at is None else self._stop_at + STOP_BUDGET_S - STOP_RESERVE_S
        undelivered = self.sink.stop(self._stop_reason, None if deadline is None else deadline - time.monotonic())
        if undelivered:
            log.warning("stopping with %d message(s) not delivered (broker unreachable or too slow)",
                        len(undelivered))
        closer.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if closer.is_alive():
            log.warning("the source %s did not close within the stop budget; exiting without it",
                        redact_uri(self.cfg.source.uri))
        log.info("stopped after %d frames (%s)", self.frames, self._stop_reason)
