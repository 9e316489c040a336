"""A thin picamera2 (libcamera) adapter for Raspberry Pi camera modules.

picamera2 is imported when a camera is opened, not at module import: libcamera's Python bindings
exist only on Raspberry Pi OS (apt python3-picamera2), so this module must import anywhere.

Colour order: picamera2 names formats as libcamera/DRM fourccs do, from the most significant byte
down, so on little-endian memory the order is reversed. "RGB888" arrays are B, G, R per pixel,
which is OpenCV's BGR; "XRGB8888" is B, G, R, X (4 channels). We ask for "RGB888" (no per-frame
work) and convert whatever libcamera actually configured, so the pipeline always gets BGR HxWx3.
"""
from __future__ import annotations

import contextlib
from typing import Any

import cv2
import numpy as np

from edge_fer.capture.latest import RECONNECT_MAX_S, Grabber, LatestFrameSource
from edge_fer.errors import SourceError, SourceUnavailable

REQUESTED_FORMAT = "RGB888"  # BGR in memory: what OpenCV wants, 3 bytes a pixel
TO_BGR = {  # configured format -> cv2.cvtColor code to BGR (None: already BGR)
    "RGB888": None,  # memory B, G, R
    "BGR888": cv2.COLOR_RGB2BGR,  # memory R, G, B
    "XRGB8888": cv2.COLOR_BGRA2BGR,  # memory B, G, R, X
    "XBGR8888": cv2.COLOR_RGBA2BGR,  # memory R, G, B, X
}


class PicameraGrabber:
    """One started Picamera2; grab() returns the next "main" stream frame as BGR."""

    period = 0.0  # the sensor sets the pace (open_source stretches the stall timeout for a set fps)

    def __init__(self, camera_num: int, width: int, height: int, fps: float | None):
        self._name = f"picamera:{camera_num}"
        try:
            from picamera2 import Picamera2
        # ImportError when absent; ValueError ("numpy.dtype size changed") when a numpy 2 in the
        # venv shadows the numpy 1 Pi OS built simplejpeg against.
        except Exception as exc:  # noqa: BLE001
            hint = (" (a numpy 2 in the venv breaks Pi OS's picamera2 on Bookworm: pip install 'numpy<2', "
                    "or install edge-fer[bookworm])" if isinstance(exc, ValueError) else "")
            raise SourceError(f"{self._name}: picamera2 is not importable ({type(exc).__name__}: {exc}){hint}. On "
                              "Raspberry Pi OS: sudo apt install python3-picamera2 and make the venv with "
                              "--system-site-packages; elsewhere use a V4L2 camera such as /dev/video0") from exc
        self._camera: Any = None
        try:
            self._camera = Picamera2(camera_num)
            controls = {"FrameRate": fps} if fps else {}
            self._camera.configure(self._camera.create_video_configuration(
                main={"size": (width, height), "format": REQUESTED_FORMAT}, controls=controls))
            configured = self._camera.camera_configuration()["main"]["format"]
            if configured not in TO_BGR:
                raise SourceError(f"{self._name}: libcamera configured format {configured!r}; "
                                  f"edge-fer converts only {', '.join(TO_BGR)}")
            self._to_bgr = TO_BGR[configured]
            self._camera.start()
        # libcamera reports a missing or busy camera as IndexError, RuntimeError or OSError,
        # depending on the version; all of them mean "cannot open".
        except Exception as exc:
            with contextlib.suppress(Exception):
                self.close()
            if isinstance(exc, SourceError):
                raise
            raise SourceUnavailable(f"{self._name}: cannot start the camera ({exc}); check "
                                    "`rpicam-hello --list-cameras` and that no other process uses it") from exc

    def grab(self) -> np.ndarray:
        image = self._camera.capture_array("main")
        return image if self._to_bgr is None else cv2.cvtColor(image, self._to_bgr)

    def close(self) -> None:
        if self._camera is not None:
            camera, self._camera = self._camera, None
            try:
                camera.stop()
            finally:
                camera.close()


def open_picamera(camera_num: int, *, width: int, height: int, fps: float | None,
                  stall_timeout_s: float, reconnect_max_s: float = RECONNECT_MAX_S,
                  wait: bool = False) -> LatestFrameSource:
    def opener() -> Grabber:
        return PicameraGrabber(camera_num, width, height, fps)

    return LatestFrameSource(f"picamera:{camera_num}", opener, stall_timeout_s=stall_timeout_s,
                             reconnect_max_s=reconnect_max_s, wait=wait)
