"""The daemon in process: the reload of its camera (which has one owner at a time), its frame rate."""
from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest
from daemon_proc import NotifyListener

from edge_fer import LABELS, service
from edge_fer.config import load_config
from edge_fer.errors import SourceError, SourceUnavailable
from edge_fer.publish import BLANK_PICTURE_REASON, MemorySink
from edge_fer.service import MIN_RATE_WINDOW_S, Daemon, _Rate, build_pipeline


class ExclusiveCamera:
    """Opens like a real camera: a second open while one is open fails as busy, and close() lets
    go of it only after a while (a reader inside a slow grab: ``released``); a camera in
    ``away`` (unplugged) fails as unavailable, or with ``wait`` opens in a waiting state, as
    LatestFrameSource does."""

    open_now: set[str] = set()
    away: set[str] = set()

    def __init__(self, cfg, wait: bool = False):
        uri = cfg.source.uri
        if uri in self.open_now:
            raise SourceError(f"source {uri!r}: device busy")
        if uri == "picamera:9":
            raise SourceError(f"source {uri!r}: no such camera")
        if uri in self.away and not wait:
            raise SourceUnavailable(f"source {uri!r}: cannot start the camera")
        self.uri, self.width, self.dropped_frames, self.waiting = uri, cfg.source.width, 0, uri in self.away
        self.open_now.add(uri)

    def close(self) -> None:
        self._polls_to_release = 2  # its reader is inside a slow grab: still the owner for a while

    def released(self, timeout: float) -> bool:
        self._polls_to_release -= 1
        if self._polls_to_release <= 0:
            self.open_now.discard(self.uri)
        return self.uri not in self.open_now


@pytest.fixture
def daemon(monkeypatch):
    ExclusiveCamera.open_now, ExclusiveCamera.away = set(), set()
    monkeypatch.setattr(service, "open_configured_source", ExclusiveCamera)
    cfg = load_config(os.devnull, {"source.uri": "picamera:0"}, {})
    d = Daemon(cfg)
    d.source = ExclusiveCamera(cfg)
    return d


def test_new_settings_for_the_same_camera_are_applied(daemon):
    new = replace(daemon.cfg, source=replace(daemon.cfg.source, width=1280))
    daemon._reopen_source(new)
    assert daemon.source.width == 1280 and ExclusiveCamera.open_now == {"picamera:0"}


def test_a_camera_that_cannot_open_leaves_the_old_one_running(daemon):
    new = replace(daemon.cfg, source=replace(daemon.cfg.source, uri="picamera:9"))
    with pytest.raises(SourceError, match="no such camera"):
        daemon._reopen_source(new)
    assert daemon.source.uri == "picamera:0" and ExclusiveCamera.open_now == {"picamera:0"}


def test_a_reload_while_the_camera_is_away_keeps_the_daemon_waiting_for_it(daemon):
    """An outage, then a reload: the new settings cannot prove themselves, and the old camera
    cannot be reopened either. The daemon must go on waiting for the camera, not exit."""
    ExclusiveCamera.away.add("picamera:0")
    new = replace(daemon.cfg, source=replace(daemon.cfg.source, width=1280))
    with pytest.raises(SourceUnavailable):
        daemon._reopen_source(new)
    assert daemon.source.uri == "picamera:0" and daemon.source.waiting and daemon.source.width == 640


def test_the_reported_frame_rate_never_comes_from_a_window_too_short_to_mean_anything():
    """STATUS= and stats right after a stats window closed: 1 frame in 1 ms is not 1000 fps."""
    rate = _Rate(now=0.0)
    assert rate.fps(0.0) == 0.0
    rate.frames = 150  # 15 fps for 10 s
    rate.reset(10.0)
    rate.frames += 1
    assert rate.fps(10.001) == pytest.approx(15.0)  # the last full window's
    assert rate.fps(10.0 + MIN_RATE_WINDOW_S) == pytest.approx(1 / MIN_RATE_WINDOW_S)


def test_a_reload_to_another_camera_ends_the_tracks_and_keeps_counting(monkeypatch, tmp_path, daemon):
    """The new camera's faces are new faces; dropped frames count from start; and a reload before
    the first frame does not send READY=1 (that waits for the frame: systemd arms the watchdog on it)."""
    listener = NotifyListener(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))
    try:
        daemon.notifier = service.Notifier()
        daemon.pipeline, daemon.sink = build_pipeline(daemon.cfg), MemorySink(daemon.cfg)
        box, probs = (100.0, 100.0, 80.0, 80.0), np.eye(len(LABELS), dtype=np.float32)[LABELS.index("happiness")]
        for t in (0.0, 0.1):
            daemon.pipeline.tracker.update([box], [probs], t, 1_700_000_000 + t)
        daemon.source.dropped_frames = 5
        new = replace(daemon.cfg, source=replace(daemon.cfg.source, uri="picamera:1"))
        daemon._reload = lambda: new
        daemon._apply_reload()
        assert daemon.source.uri == "picamera:1"
        assert [m.payload["event"] for m in daemon.sink.messages if m.kind == "expression"] == ["gone"]
        assert daemon._stats(_Rate(0.0), 1.0, 0.0).dropped_frames == 5
        listener.wait_var("RELOADING", "1")
        daemon._ready = True
        daemon._apply_reload()  # nothing changed: still says it is ready again
        listener.wait_var("READY", "1")
        assert len(listener.with_var("READY")) == 1 and len(listener.with_var("RELOADING")) == 2
    finally:
        listener.close()


@pytest.mark.parametrize("change, ends", [
    ({"mqtt": {"stats_interval_s": 30.0}}, False),  # how often, not where: the face is still there
    ({"homeassistant": {"discovery": True}}, False),
    ({"mqtt": {"device_id": "kiosk-2"}}, True),  # other topics: their consumers never saw it appear
    ({"privacy": {"mode": "presence"}}, True),
    ({"privacy": {"k_min": 7}}, False),  # unused outside aggregate mode
])
def test_a_reload_ends_the_tracks_only_when_their_audience_changes(monkeypatch, daemon, change, ends):
    monkeypatch.setattr(service, "build_sink", MemorySink)
    daemon.pipeline, daemon.sink = build_pipeline(daemon.cfg), MemorySink(daemon.cfg)
    box, probs = (100.0, 100.0, 80.0, 80.0), np.eye(len(LABELS), dtype=np.float32)[LABELS.index("happiness")]
    for t in (0.0, 0.1):
        daemon.pipeline.tracker.update([box], [probs], t, 1_700_000_000 + t)
    old_sink = daemon.sink
    (section, values), = change.items()
    new = replace(daemon.cfg, **{section: replace(getattr(daemon.cfg, section), **values)})
    daemon._reload = lambda: new
    daemon._apply_reload()
    gone = [m for m in old_sink.messages + daemon.sink.messages if m.kind == "expression"]
    assert bool(gone) == ends, gone
    assert bool(daemon.pipeline.tracker.clear(1_700_000_001)) != ends  # the track goes on, or is over


@pytest.mark.parametrize("change, withdrawn", [
    ({"homeassistant": {"discovery": False}}, True),  # turned off: the entities must go
    ({"mqtt": {"device_id": "kiosk-2"}}, True),  # renamed: the old device's would stay unavailable for good
    ({"mqtt": {"stats_interval_s": 30.0}}, False),
])
def test_a_reload_that_moves_or_ends_discovery_removes_the_old_entities(monkeypatch, daemon, change, withdrawn):
    monkeypatch.setattr(service, "build_sink", MemorySink)
    cfg = replace(daemon.cfg, homeassistant=replace(daemon.cfg.homeassistant, discovery=True))
    daemon.cfg, daemon.pipeline, daemon.sink = cfg, build_pipeline(cfg), MemorySink(cfg)
    old_sink = daemon.sink
    (section, values), = change.items()
    new = replace(cfg, **{section: replace(getattr(cfg, section), **values)})
    daemon._reload = lambda: new
    daemon._apply_reload()
    removed = sorted(m.topic for m in old_sink.messages if m.kind == "discovery_removal")
    device = cfg.mqtt.device_id
    expected = sorted(f"homeassistant/{c}/{device}/{o}/config" for c, o in [
        ("sensor", "expression"), ("sensor", "faces"), ("binary_sensor", "face_present"),
        ("sensor", "window_expression"), ("sensor", "window_faces")])
    assert removed == (expected if withdrawn else [])


def test_a_reload_while_the_picture_is_lost_stays_no_picture_and_claims_no_state(monkeypatch, daemon):
    """A SIGHUP during a camera outage: the new sink must not say "online", and the ends of the
    tracks must not come with a state saying nobody is there."""
    monkeypatch.setattr(service, "build_sink", MemorySink)
    daemon.pipeline, daemon.sink = build_pipeline(daemon.cfg), MemorySink(daemon.cfg)
    daemon._ready, daemon._blind = True, BLANK_PICTURE_REASON
    old_sink = daemon.sink
    new = replace(daemon.cfg, mqtt=replace(daemon.cfg.mqtt, device_id="kiosk-2"),
                  tracker=replace(daemon.cfg.tracker, smoothing_s=0.6))  # a new sink and a new pipeline
    daemon._reload = lambda: new
    daemon._apply_reload()
    messages = old_sink.messages + daemon.sink.messages
    assert [(m.payload["status"], m.payload["reason"]) for m in daemon.sink.messages
            if m.kind == "available"] == [("no_picture", BLANK_PICTURE_REASON)]
    assert [m for m in messages if m.kind == "state"] == []


def test_the_lost_picture_says_why_and_follows_the_cause():
    """Covered (frames that show nothing), then unplugged (no frames), then back but covered: the
    reason follows, so the operator looks at the lens or at the cable, not the other one."""
    from edge_fer.publish import NO_PICTURE_REASON
    from edge_fer.service import _Picture

    picture, fps, missed = _Picture(), 15.0, 1.0
    cause = lambda t: picture.cause(t, missed, 0.0)  # noqa: E731 - an unpaced camera
    t = 0.0
    for _ in range(30):  # a face in view
        picture.frame(t, blank=False)
        t += 1 / fps
    assert cause(t) is None
    for _ in range(30):  # covered: 2 s of black frames
        picture.frame(t, blank=True)
        t += 1 / fps
    assert cause(t) == BLANK_PICTURE_REASON
    t += 2.0  # unplugged: no frame for 2 s
    assert cause(t) == NO_PICTURE_REASON
    for _ in range(30):  # back, still covered
        picture.frame(t, blank=True)
        t += 1 / fps
    assert cause(t) == BLANK_PICTURE_REASON
    picture.frame(t, blank=False)
    assert cause(t) is None


def test_a_slow_unpaced_camera_covered_after_its_first_frame_is_still_lost():
    """Intervals come from blank frames too: a 2 fps stream covered after one frame."""
    from edge_fer.service import _Picture

    picture = _Picture()
    picture.frame(0.0, blank=False)
    for i in range(1, 20):
        picture.frame(i * 0.5, blank=True)
    assert picture.cause(9.6, 1.0, 0.0) == BLANK_PICTURE_REASON


def test_a_cover_shorter_than_a_lost_picture_is_not_time_the_face_was_away():
    from edge_fer.track import Tracker, TrackerSettings

    tracker = Tracker(LABELS, TrackerSettings(max_missed_s=1.0))
    box, probs = (100.0, 100.0, 80.0, 80.0), np.eye(len(LABELS), dtype=np.float32)[LABELS.index("happiness")]
    for t in (0.0, 0.1, 0.2):
        tracker.update([box], [probs], t, t)
    tracker.excuse(0.9)  # covered from 0.2 s to 1.1 s
    faces, events = tracker.update([], [], 1.3, 1.3)  # the face not yet found again on the first frames back
    assert [e.kind for e in events] == [] and len(faces) == 1
