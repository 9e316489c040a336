"""OpenCV sources: V4L2 cameras, video files, rtsp/http streams, image files and folders.

Files and images are paced to a frame rate so they behave like a camera (a slow consumer drops
frames instead of stretching the video); cameras and streams are paced by the device itself.
"""
from __future__ import annotations

import logging
import math
import re
import time
from pathlib import Path
from collections.abc import Callable

import cv2
import numpy as np

from edge_fer.capture.latest import RECONNECT_MAX_S, Grabber, LatestFrameSource
from edge_fer.errors import SourceError, SourceUnavailable
from edge_fer.redact import redact_uri

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
BUILTIN_IMAGES = {"astronaut": DATA_DIR / "astronaut.jpg"}  # provenance: data/ASTRONAUT.md
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
STREAM_SCHEMES = ("rtsp", "http", "https")  # what OpenCV's FFmpeg backend opens for us
STILL_FPS = 15.0  # images repeat at this rate unless fps is given: the Pi camera's usual preview rate
FILE_FPS_FALLBACK = 25.0  # for containers that do not state a rate (PAL video's rate)
SOURCE_FORMS = ("a camera index (0), /dev/videoN, picamera[:N], a video or image file, a folder of images, "
                "an rtsp:// or http(s):// URL, or " + ", ".join(f"builtin:{n}" for n in BUILTIN_IMAGES))


class Pacer:
    """Sleeps so calls to wait() return at most ``fps`` times a second; never bursts to catch up.

    One per source, kept across reopens: a looping file (reopened at its end) keeps its pace
    through the wrap instead of delivering the first frame of each pass at once.
    """

    def __init__(self, fps: float):
        self.period = 1.0 / fps
        self._due = 0.0

    def set_rate(self, fps: float) -> None:
        self.period = 1.0 / fps

    def wait(self) -> None:
        now = time.monotonic()
        if self._due > now:
            time.sleep(self._due - now)
        self._due = max(self._due, now) + self.period


class VideoGrabber:
    """A cv2.VideoCapture whose first frame was already read (proof that it works).

    ``pacer`` is None for live sources (cameras, streams): for them a failed read is an error to
    reconnect from, while for a file it is the end.
    """

    def __init__(self, name: str, capture: cv2.VideoCapture, first: np.ndarray, pacer: Pacer | None):
        self._name = name
        self._capture = capture
        self._pending: np.ndarray | None = first
        self._pacer = pacer
        self.period = pacer.period if pacer is not None else 0.0

    def grab(self) -> np.ndarray | None:
        image, self._pending = self._pending, None
        if image is None:
            ok, image = self._capture.read()
            if not ok:
                if self._pacer is None:  # a camera or stream: failure, not the end
                    raise SourceError(f"{self._name}: the device stopped giving frames")
                return None
        if self._pacer is not None:
            self._pacer.wait()
        return image

    def close(self) -> None:
        self._capture.release()


class StillGrabber:
    """Image files delivered one per tick, in name order; a single image is decoded once."""

    def __init__(self, name: str, paths: list[Path], pacer: Pacer, loop: bool):
        self._name = name
        self._paths = paths
        self._pacer = pacer
        self.period = pacer.period
        self._loop = loop
        self._next = 0
        try:
            self._cached = read_image(paths[0]) if len(paths) == 1 else None
        except SourceError as exc:
            raise SourceError(f"{self._name}: {exc}") from None
        self._unreadable: set[Path] = set()  # said once: a looping folder would repeat it every pass

    def grab(self) -> np.ndarray | None:
        for _ in range(len(self._paths)):  # at most one pass over unreadable files
            if self._next == len(self._paths):
                if not self._loop:
                    return None
                self._next = 0
            path = self._paths[self._next]
            self._next += 1
            try:
                image = self._cached if self._cached is not None else read_image(path)
            except SourceError as exc:
                if path not in self._unreadable:  # by position, not name: a photo's name may be a person's
                    self._unreadable.add(path)
                    log.warning("capture %s: skipping image %d of %d in name order, %s (said once; later passes "
                                "skip it silently)", self._name, self._next, len(self._paths), exc)
                continue
            self._pacer.wait()
            return image
        raise SourceError(f"{self._name}: none of its {len(self._paths)} images is readable")

    def close(self) -> None:
        pass


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to BGR, read-only so a consumer cannot alter a frame that repeats.

    Errors do not name the file (a photo's name may be a person's; callers say which source), and
    OpenCV never sees the path either: ``cv2.imread`` prints it to stderr, the journal, on failure."""
    try:
        image = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
    except OSError as exc:
        raise SourceError(f"cannot read the image ({exc.strerror or type(exc).__name__})") from None
    if image is None:
        raise SourceError("not a readable image (damaged, or a format OpenCV does not read); "
                          "re-save it as JPEG or PNG, or remove it")
    image.flags.writeable = False
    return image


def open_opencv(uri: str, *, width: int, height: int, fps: float | None, loop: bool,
                stall_timeout_s: float, reconnect_max_s: float = RECONNECT_MAX_S,
                wait: bool = False) -> LatestFrameSource:
    """Open anything but a picamera; SourceError naming the source if it cannot be used."""
    opener, loop = _opener(uri, width, height, fps, loop, stall_timeout_s)  # LatestFrameSource opens it once now
    return LatestFrameSource(redact_uri(uri), opener, loop=loop, stall_timeout_s=stall_timeout_s,
                             reconnect_max_s=reconnect_max_s, wait=wait)


def _opener(uri: str, width: int, height: int, fps: float | None, loop: bool,
            stall_timeout_s: float) -> tuple[Callable[[], Grabber], bool]:
    """(function that opens the source, whether it loops) for one source string."""
    scheme = re.match(r"([a-zA-Z][a-zA-Z0-9+.-]*)://", uri)
    if scheme:
        shown = redact_uri(uri)  # what messages say: the URL without its password
        if scheme.group(1).lower() not in STREAM_SCHEMES:
            raise SourceError(f"source {shown!r}: unsupported scheme {scheme.group(1)!r}; use {SOURCE_FORMS}")
        timeout_ms = int(stall_timeout_s * 1000)  # so a dead stream returns instead of blocking FFmpeg
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]

        def open_stream() -> Grabber:
            cap, first = _open_capture(shown, lambda: cv2.VideoCapture(uri, cv2.CAP_FFMPEG, params),
                                       "check the URL and that the camera streams (try it in ffplay)",
                                       SourceUnavailable)
            return VideoGrabber(shown, cap, first, None)

        return open_stream, False
    if uri.startswith("builtin:"):
        name = uri.removeprefix("builtin:")
        if name not in BUILTIN_IMAGES:
            raise SourceError(f"source {uri!r}: no such built-in image; choose "
                              + ", ".join(f"builtin:{n}" for n in BUILTIN_IMAGES))
        paths, pacer = [BUILTIN_IMAGES[name]], Pacer(fps or STILL_FPS)
        return (lambda: StillGrabber(uri, paths, pacer, loop=True)), True  # a stand-in camera
    if uri.isdigit() or uri.startswith("/dev/"):
        return (lambda: _open_device(uri, width, height, fps)), False
    return _file_opener(uri, fps, loop), loop


def _file_opener(uri: str, fps: float | None, loop: bool) -> Callable[[], Grabber]:
    """Folder, image or video file; looked up again on every reopen, so it may come back."""
    path = Path(uri).expanduser()
    pacer = Pacer(fps or STILL_FPS)

    def open_file() -> Grabber:
        if path.is_dir():
            paths = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not paths:
                raise SourceError(f"source {uri!r}: folder has no images ({', '.join(IMAGE_SUFFIXES)}); "
                                  "add some or point the source elsewhere")
            return StillGrabber(uri, paths, pacer, loop)
        if not path.is_file():
            raise SourceError(f"source {uri!r}: no such file; use {SOURCE_FORMS}")
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return StillGrabber(uri, [path], pacer, loop)
        cap, first = _open_capture(uri, lambda: cv2.VideoCapture(str(path)),
                                   "is it a video? check it plays (ffprobe) or re-encode it to H.264 or MJPG")
        rate = fps or cap.get(cv2.CAP_PROP_FPS)
        pacer.set_rate(rate if math.isfinite(rate) and rate > 0 else FILE_FPS_FALLBACK)
        return VideoGrabber(uri, cap, first, pacer)

    return open_file


def _open_device(uri: str, width: int, height: int, fps: float | None) -> Grabber:
    """A V4L2 camera at the requested size and rate (the driver may pick the nearest it has)."""
    if uri.startswith("/dev/") and not Path(uri).exists():
        raise SourceUnavailable(f"source {uri!r}: no such device; list cameras with `v4l2-ctl --list-devices`")

    def capture() -> cv2.VideoCapture:
        cap = cv2.VideoCapture(int(uri)) if uri.isdigit() else cv2.VideoCapture(uri, cv2.CAP_V4L2)
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps:
            cap.set(cv2.CAP_PROP_FPS, fps)
        return cap

    cap, first = _open_capture(uri, capture, "check the camera is plugged in and not used by another process "
                                             "(`v4l2-ctl --list-devices`)", SourceUnavailable)
    return VideoGrabber(uri, cap, first, None)


def _open_capture(uri: str, make: Callable[[], cv2.VideoCapture], advice: str,
                  error: type[SourceError] = SourceError) -> tuple[cv2.VideoCapture, np.ndarray]:
    """Open and read one frame, so a source that opens but never delivers fails here. ``error``:
    SourceUnavailable for cameras and streams, which may come later; a file will not."""
    cap = make()
    ok, first = cap.read() if cap.isOpened() else (False, None)
    if not ok or first is None:
        cap.release()
        raise error(f"source {uri!r}: cannot open or read a frame; {advice}")
    return cap, first
