"""Frame sources: one ``open_source`` for cameras, files, streams and the built-in photo."""
from __future__ import annotations

import re

from edge_fer.capture.base import Frame, FrameSource
from edge_fer.capture.latest import MIN_STALL_FRAMES, RECONNECT_INITIAL_S, RECONNECT_MAX_S, LatestFrameSource
from edge_fer.capture.opencv import BUILTIN_IMAGES, SOURCE_FORMS, open_opencv
from edge_fer.capture.picamera import open_picamera
from edge_fer.errors import SourceError

__all__ = ["BUILTIN_IMAGES", "RECONNECT_INITIAL_S", "RECONNECT_MAX_S", "Frame", "FrameSource",
           "LatestFrameSource", "open_source"]


def open_source(uri: str, *, width: int = 640, height: int = 480, fps: float | None = None, loop: bool = False,
                stall_timeout_s: float = 5.0, reconnect_max_s: float = RECONNECT_MAX_S,
                wait: bool = False) -> LatestFrameSource:
    """Open a frame source that always hands out the newest frame and reconnects by itself.

    ``uri``: "picamera" or "picamera:N" (Raspberry Pi camera N), a camera index ("0"),
    "/dev/videoN", an rtsp:// or http(s):// URL, a video file, an image file, a folder of images,
    or "builtin:astronaut". width/height/fps are requested from cameras; fps also paces files
    and images. ``loop`` restarts files at their end. A source silent for ``stall_timeout_s``
    (at least MIN_STALL_FRAMES frame periods) is reopened. Raises SourceError naming the source and
    what to do when it cannot be opened; with ``wait``, a camera or stream that is not there yet
    (SourceUnavailable) is instead waited for, reopened with backoff like a lost one; the backoff's
    waits double up to ``reconnect_max_s``.
    """
    if fps:  # cameras and streams set their own pace: only the config tells their period
        stall_timeout_s = max(stall_timeout_s, MIN_STALL_FRAMES / fps)
    camera = re.fullmatch(r"picamera(?::(\d+))?", uri)
    if camera:
        return open_picamera(int(camera.group(1) or 0), width=width, height=height, fps=fps,
                             stall_timeout_s=stall_timeout_s, reconnect_max_s=reconnect_max_s, wait=wait)
    if uri.startswith("picamera"):
        raise SourceError(f"source {uri!r}: write picamera or picamera:N (N = camera number); "
                          f"sources are {SOURCE_FORMS}")
    return open_opencv(uri, width=width, height=height, fps=fps, loop=loop, stall_timeout_s=stall_timeout_s,
                       reconnect_max_s=reconnect_max_s, wait=wait)
