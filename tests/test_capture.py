"""Frame sources on real files (videos written here, the packaged photo); Picamera2 through a fake."""
from __future__ import annotations

import os

import logging
import re
import shutil
import sys
import threading
import time
import types

import cv2
import numpy as np
import pytest

from edge_fer.capture import opencv
from fixtures_media import frame_number, read_astronaut

import edge_fer.capture as capture
from edge_fer.capture import LatestFrameSource, open_source
from edge_fer.capture.picamera import PicameraGrabber
from edge_fer.errors import SourceError, SourceUnavailable

READ_TIMEOUT_S = 5.0  # generous: a read that takes this long is a failure, not slowness
SCENARIO_S = 30.0  # a multi-reconnect scenario on a loaded machine: a bound on "it happened", not a speed


def read_all(source: LatestFrameSource, limit: int = 1000) -> list:
    frames = []
    while len(frames) < limit and (frame := source.read(READ_TIMEOUT_S)) is not None:
        frames.append(frame)
    return frames


def wait_until(predicate, timeout: float = READ_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# --- files ---------------------------------------------------------------------------------------

def test_video_file_plays_once_then_reports_end_of_input(make_video):
    with open_source(str(make_video(10, fps=50))) as source:
        frames = read_all(source)
        assert source.ended and source.read() is None
        assert len(frames) + source.dropped_frames == 10
    numbers = [frame_number(f.image) for f in frames]
    assert numbers == sorted(numbers) and numbers[-1] == 9
    assert [f.index for f in frames] == list(range(len(frames)))
    assert all(f.image.shape == (240, 320, 3) for f in frames)


def test_looping_video_restarts_at_its_end(make_video):
    with open_source(str(make_video(5, fps=50)), loop=True) as source:
        numbers = [frame_number(source.read(READ_TIMEOUT_S).image) for _ in range(18)]
        assert not source.ended
    restarts = sum(b < a for a, b in zip(numbers, numbers[1:]))
    assert restarts >= 2, numbers


def test_slow_video_plays_at_its_own_rate_without_counting_as_stalled(make_video, caplog):
    # 1 fps from the container, not the config: frames 1 s apart, twice the stall timeout
    with open_source(str(make_video(3, fps=1)), stall_timeout_s=0.5) as source:
        frames = read_all(source, limit=4)  # a reopened file would replay frame 0 forever
        ended = source.ended
    assert [frame_number(f.image) for f in frames] == [0, 1, 2] and ended
    assert "stalled" not in caplog.text


def test_slow_consumer_gets_the_newest_frame_and_drops_are_counted(make_video):
    with open_source(str(make_video(20, fps=100))) as source:
        frames = []
        while (frame := source.read(READ_TIMEOUT_S)) is not None:
            frames.append(frame)
            time.sleep(0.05)  # 5 frame periods per read
        assert len(frames) + source.dropped_frames == 20
        assert source.dropped_frames >= 10
    numbers = [frame_number(f.image) for f in frames]
    assert numbers == sorted(set(numbers)) and numbers[-1] == 19


def test_file_that_vanishes_is_reopened_when_it_returns(make_video, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="edge_fer.capture")
    video = make_video(5, fps=50)
    with open_source(str(video), loop=True) as source:
        assert source.read(READ_TIMEOUT_S) is not None
        hidden = video.rename(tmp_path / "hidden.avi")
        wait_until(lambda: "reopen failed" in caplog.text)
        source.read(timeout=0)  # the old reader's last frame, if still unread
        back = time.monotonic()
        shutil.move(hidden, video)
        wait_until(lambda: "reopened" in caplog.text)
        assert source.read(READ_TIMEOUT_S).timestamp > back
    assert re.search(r"clip\.avi.*no such file.*retrying in 0\.5 s", caplog.text)


def test_folder_plays_images_in_name_order_and_skips_unreadable_ones(tmp_path, astronaut_bgr, caplog):
    cv2.imwrite(str(tmp_path / "b.png"), astronaut_bgr)
    cv2.imwrite(str(tmp_path / "a.jpg"), cv2.resize(astronaut_bgr, (64, 64)))
    (tmp_path / "c.jpg").write_text("not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    with open_source(str(tmp_path), fps=10) as source:
        shapes = [f.image.shape for f in read_all(source)]
        dropped = source.dropped_frames  # only if this thread was starved for a frame period
    assert shapes == [(64, 64, 3), (512, 512, 3)][dropped:]
    # by position: a photo's file name may be a person's name, and the log goes to the journal
    assert "skipping image 3 of 3 in name order, not a readable image" in caplog.text and "c.jpg" not in caplog.text


def test_a_looping_folder_reports_an_unreadable_image_once(tmp_path, astronaut_bgr, caplog):
    """Under systemd the folder loops for days: one warning, not one per pass into the journal."""
    cv2.imwrite(str(tmp_path / "a.jpg"), cv2.resize(astronaut_bgr, (64, 64)))
    (tmp_path / "z.jpg").write_text("not an image")
    with open_source(str(tmp_path), fps=50, loop=True) as source:
        frames = [source.read(READ_TIMEOUT_S) for _ in range(6)]
    assert all(f is not None for f in frames)
    warnings = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(warnings) == 1 and "image 2 of 2 in name order, not a readable image" in warnings[0], warnings


def test_a_looping_video_keeps_its_pace_through_the_wrap(make_video):
    """Each pass reopens the file; the first frame of a pass must wait its turn too, or a short
    clip (one frame: a still exported as video) would run as fast as the decoder goes."""
    fps, window_s = 10.0, 1.5
    with open_source(str(make_video(1, fps=fps)), loop=True) as source:
        assert source.read(READ_TIMEOUT_S) is not None
        started, frames = time.monotonic(), 0
        while time.monotonic() - started < window_s:
            frames += source.read(READ_TIMEOUT_S) is not None
    assert frames <= fps * window_s + 2, f"{frames} frames in {window_s} s at {fps} fps"


def test_a_camera_away_at_start_is_waited_for_when_asked(caplog):
    """A network camera that does not answer yet (rebooting; a USB camera enumerating at boot):
    with ``wait`` the source opens anyway and delivers once the camera is there."""
    from daemon_proc import MjpegServer

    caplog.set_level(logging.INFO, logger="edge_fer.capture")
    ok, jpeg = cv2.imencode(".jpg", cv2.resize(read_astronaut(), (160, 120)))
    camera = MjpegServer(jpeg.tobytes(), fps=15)
    camera.pause()
    try:
        with pytest.raises(SourceUnavailable, match="cannot open or read a frame"):
            open_source(camera.url, stall_timeout_s=0.5)
        with open_source(camera.url, stall_timeout_s=0.5, wait=True) as source:
            assert source.read(0.5) is None
            camera.resume()
            assert source.read(SCENARIO_S) is not None
        assert "waiting for it" in caplog.text and re.search(r"capture http://\S+: (opened|reopened)", caplog.text)
    finally:
        camera.close()


def test_a_missing_file_is_not_waited_for():
    with pytest.raises(SourceError, match="no such file") as error:
        open_source("missing.avi", wait=True)
    assert not isinstance(error.value, SourceUnavailable)


def test_released_waits_until_a_slow_grab_lets_go_of_the_camera():
    """A camera with one owner at a time, at a frame every few seconds: close() returns while the
    reader is still inside a grab, so a reload must wait for ``released`` before reopening."""
    owner = threading.Lock()

    class SlowExclusiveCamera:
        period = 0.0

        def __init__(self) -> None:
            if not owner.acquire(blocking=False):
                raise SourceError("slow: device busy")
            self._grabs = 0

        def grab(self) -> np.ndarray:
            self._grabs += 1
            if self._grabs > 1:
                time.sleep(3.0)
            return np.zeros((4, 4, 3), np.uint8)

        def close(self) -> None:
            owner.release()

    source = LatestFrameSource("slow", SlowExclusiveCamera, stall_timeout_s=10.0)
    assert source.read(READ_TIMEOUT_S) is not None
    source.close()
    assert owner.locked(), "close() waited for the grab: this test no longer tells anything"
    assert source.released(READ_TIMEOUT_S) and not owner.locked()
    SlowExclusiveCamera().close()  # the camera can be opened again


def test_builtin_photo_repeats_like_a_camera():
    with open_source("builtin:astronaut", fps=20) as source:
        frames = [source.read(READ_TIMEOUT_S) for _ in range(5)]
        assert not source.ended
    np.testing.assert_array_equal(frames[0].image, read_astronaut())
    assert not frames[0].image.flags.writeable  # one decoded array, shared by every frame
    # Frame k is not released before k periods; the first may be late by up to one.
    assert frames[-1].timestamp - frames[0].timestamp >= 3 / 20


def test_read_times_out_without_claiming_end_of_input():
    """A slow camera between two frames: read() hands back None, by default too (the caller's loop
    needs it back to see its stop flag), and the source has not ended."""
    with open_source("builtin:astronaut", fps=0.01) as source:  # the next frame is 100 s away
        assert source.read(READ_TIMEOUT_S) is not None
        assert source.read(timeout=0.05) is None
        assert source.read() is None
        assert not source.ended


def test_close_ends_the_threads_and_reads(make_video):
    video = make_video(5, fps=50)
    source = open_source(str(video), loop=True)
    source.read(READ_TIMEOUT_S)
    source.close()
    assert source.read() is None
    assert not [t for t in threading.enumerate() if str(video) in t.name and t.is_alive()]


@pytest.mark.parametrize("uri, message", [
    ("missing.avi", "no such file"),
    ("missing.jpg", "no such file"),
    ("http://127.0.0.1:9/stream.mjpg", "check the URL"),  # nothing listens on the discard port
    ("ftp://camera/stream", "unsupported scheme 'ftp'"),
    ("builtin:moon", "builtin:astronaut"),
    ("/dev/video99", "v4l2-ctl --list-devices"),
    ("picamera:front", "picamera:N"),
])
def test_bad_source_names_itself_and_what_to_do(uri, message):
    with pytest.raises(SourceError, match=re.escape(message)) as error:
        open_source(uri)
    assert uri in str(error.value)


@pytest.mark.parametrize("name, content, message", [
    ("broken.jpg", "not a jpeg", "not a readable image"),
    ("broken.avi", "not a video", "cannot open or read a frame"),
])
def test_unreadable_file_is_a_source_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(SourceError, match=message) as error:
        open_source(str(path))
    assert name in str(error.value)


def test_empty_folder_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="folder has no images"):
        open_source(str(tmp_path))


def test_public_names_are_pinned():
    assert sorted(capture.__all__) == ["BUILTIN_IMAGES", "Frame", "FrameSource", "LatestFrameSource",
                                       "RECONNECT_INITIAL_S", "RECONNECT_MAX_S", "open_source"]


# --- picamera2, faked ----------------------------------------------------------------------------

class FakeCamera:
    """Stands in for picamera2.Picamera2: the calls the adapter makes, frames in libcamera's byte order.

    Behaviour knobs (class attributes, reset per test): ``format`` overrides what libcamera
    "configures"; ``open_failures`` makes that many constructions fail; ``stall_after`` /
    ``fail_after`` make capture_array block or raise after that many frames, on the first
    ``faulty_cameras`` cameras opened.
    """

    PERIOD_S = 0.01  # a 100 fps sensor, so the reader thread does not spin
    format: str | None = None
    open_failures = 0
    stall_after: int | None = None
    fail_after: int | None = None
    faulty_cameras = 1
    release = threading.Event()

    def __init__(self, camera_num: int = 0):
        if FakeCamera.open_failures:
            FakeCamera.open_failures -= 1
            raise RuntimeError("Camera in use by another process")
        self.camera_num = camera_num
        self.faulty = len(FakeCamera.instances) < FakeCamera.faulty_cameras
        self.frames = 0
        self.closed = False
        FakeCamera.instances.append(self)

    def create_video_configuration(self, main, controls=None):
        return {"main": dict(main), "controls": dict(controls or {})}

    def configure(self, config):
        self.config = config

    def camera_configuration(self):
        return {"main": {**self.config["main"], "format": FakeCamera.format or self.config["main"]["format"]}}

    def start(self):
        pass

    def capture_array(self, name="main"):
        if self.faulty and self.frames == FakeCamera.stall_after:
            FakeCamera.release.wait()
        if self.faulty and self.frames == FakeCamera.fail_after:
            raise RuntimeError("Device timeout")
        self.frames += 1
        time.sleep(self.PERIOD_S)
        bgr = cv2.resize(read_astronaut(), self.config["main"]["size"])
        fmt = self.camera_configuration()["main"]["format"]
        return {"RGB888": bgr, "BGR888": bgr[:, :, ::-1].copy(),
                "XRGB8888": np.dstack([bgr, np.full(bgr.shape[:2], 255, np.uint8)]),
                "XBGR8888": np.dstack([bgr[:, :, ::-1], np.full(bgr.shape[:2], 255, np.uint8)])}[fmt]

    def stop(self):
        pass

    def close(self):
        self.closed = True


@pytest.fixture
def fake_picamera2(monkeypatch):
    FakeCamera.format, FakeCamera.open_failures, FakeCamera.faulty_cameras = None, 0, 1
    FakeCamera.stall_after = FakeCamera.fail_after = None
    FakeCamera.instances = []
    FakeCamera.release = threading.Event()
    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=FakeCamera))
    yield FakeCamera
    FakeCamera.release.set()  # let a deliberately stuck reader finish


@pytest.mark.parametrize("fmt", ["RGB888", "BGR888", "XRGB8888", "XBGR8888"])
def test_picamera_frames_are_bgr_whatever_libcamera_configured(fake_picamera2, fmt):
    fake_picamera2.format = fmt
    with open_source("picamera:1", width=320, height=240, fps=20) as source:
        frame = source.read(READ_TIMEOUT_S)
    (camera,) = fake_picamera2.instances
    assert camera.camera_num == 1 and camera.closed
    assert camera.config == {"main": {"size": (320, 240), "format": "RGB888"}, "controls": {"FrameRate": 20}}
    np.testing.assert_array_equal(frame.image, cv2.resize(read_astronaut(), (320, 240)))


def test_picamera_format_we_cannot_convert_is_a_source_error(fake_picamera2):
    fake_picamera2.format = "YUV420"
    with pytest.raises(SourceError, match="YUV420"):
        open_source("picamera")
    assert fake_picamera2.instances[0].closed


def test_picamera_without_picamera2_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails as off a Pi
    with pytest.raises(SourceError, match="python3-picamera2"):
        open_source("picamera")


def test_picamera2_broken_by_numpy_2_says_how_to_fix_it(monkeypatch):
    """On Bookworm, a numpy 2 in the venv shadows the numpy 1 Pi OS built simplejpeg against:
    importing picamera2 raises ValueError, not ImportError. It must not crash the daemon."""
    class BrokenModule(types.ModuleType):
        def __getattr__(self, name):
            raise ValueError("numpy.dtype size changed, may indicate binary incompatibility. Expected 96 from "
                             "C header, got 88 from PyObject")

    monkeypatch.setitem(sys.modules, "picamera2", BrokenModule("picamera2"))
    with pytest.raises(SourceError, match=r"numpy 2 in the venv breaks Pi OS's picamera2 .*edge-fer\[bookworm\]"):
        open_source("picamera")


def test_stalled_camera_is_reopened(fake_picamera2, caplog):
    fake_picamera2.stall_after = 3
    with open_source("picamera", stall_timeout_s=0.5) as source:
        frames = [source.read(READ_TIMEOUT_S) for _ in range(6)]
    assert all(f is not None for f in frames)
    assert len(fake_picamera2.instances) == 2
    assert "stalled (no frame for 0.5 s); reopening in 0.5 s" in caplog.text


def test_camera_errors_reopen_with_doubling_backoff(fake_picamera2, caplog):
    fake_picamera2.fail_after = 2
    fake_picamera2.open_failures = 0

    def opener():
        return PicameraGrabber(0, 320, 240, None)

    source = LatestFrameSource("picamera:0", opener, reconnect_initial_s=0.02, reconnect_max_s=0.08)
    fake_picamera2.open_failures = 4  # the first reopens find the camera busy
    with source:
        wait_until(lambda: len(fake_picamera2.instances) == 2)
        assert source.read(READ_TIMEOUT_S) is not None
    waits = re.findall(r"(?:reopening|retrying) in ([\d.]+) s", caplog.text)
    assert "read failed (Device timeout)" in caplog.text
    assert [float(w) for w in waits] == [0.02, 0.04, 0.08, 0.08, 0.08]


def test_backoff_starts_again_once_the_camera_really_delivered(fake_picamera2, caplog):
    fake_picamera2.fail_after, fake_picamera2.faulty_cameras = 80, 2  # 0.8 s of frames, then a failure

    def opener():
        return PicameraGrabber(0, 320, 240, None)

    source = LatestFrameSource("picamera:0", opener, stall_timeout_s=0.5, reconnect_initial_s=0.02,
                               reconnect_max_s=0.08)
    fake_picamera2.open_failures = 2
    with source:
        wait_until(lambda: len(fake_picamera2.instances) == 3, timeout=SCENARIO_S)
        assert source.read(READ_TIMEOUT_S) is not None
    waits = re.findall(r"(?:reopening|retrying) in ([\d.]+) s", caplog.text)
    assert [float(w) for w in waits] == [0.02, 0.04, 0.08, 0.02]  # camera 2 ran longer than the stall timeout


def test_live_source_that_fails_after_its_probe_frame_backs_off(make_video, caplog):
    """A camera or stream opens, gives the probe frame _open_capture read, then fails: that is a
    failure every time, not a recovery, so the waits keep doubling."""
    video = str(make_video(1, fps=25))  # read as a live source: its second read fails

    def opener():
        cap, first = opencv._open_capture(video, lambda: cv2.VideoCapture(video), "")
        return opencv.VideoGrabber(video, cap, first, None)

    with LatestFrameSource(video, opener, reconnect_initial_s=0.02, reconnect_max_s=0.08):
        wait_until(lambda: caplog.text.count("reopening in") >= 4, timeout=SCENARIO_S)
    waits = re.findall(r"read failed \(.*stopped giving frames\); reopening in ([\d.]+) s", caplog.text)
    assert [float(w) for w in waits[:4]] == [0.02, 0.04, 0.08, 0.08]


def test_a_stream_error_never_shows_the_camera_password(caplog):
    with pytest.raises(SourceUnavailable) as error:
        open_source("http://admin:CamPa55word@127.0.0.1:9/stream.mjpg", stall_timeout_s=0.5)
    assert "CamPa55word" not in str(error.value) and "admin:***@127.0.0.1:9" in str(error.value)
    with open_source("http://admin:CamPa55word@127.0.0.1:9/stream.mjpg", stall_timeout_s=0.5, wait=True) as source:
        assert "CamPa55word" not in source.name
    assert "CamPa55word" not in caplog.text and "admin:***@" in caplog.text


def test_the_reconnect_ceiling_comes_from_the_config(tmp_path):
    """In a car a camera that is back must not stay unseen for the default 30 s."""
    from edge_fer.config import load_config
    from edge_fer.service import open_configured_source

    cfg = load_config(os.devnull, {"source.uri": "builtin:astronaut", "source.reconnect_max_s": "2"}, {})
    source = open_configured_source(cfg)
    try:
        assert source._reconnect_max_s == 2.0
    finally:
        source.close()
