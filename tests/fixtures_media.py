"""Images and videos for the detect and capture tests, built from the packaged astronaut photo."""
from __future__ import annotations

from pathlib import Path
from collections.abc import Callable

import cv2
import numpy as np
import pytest

from edge_fer.capture.opencv import BUILTIN_IMAGES

# Where the face is in the 512x512 photo: centre and side of BlazeFace's full-range box, rounded.
ASTRONAUT_FACE_CENTRE = (225.0, 122.0)
ASTRONAUT_FACE_PX = 100.0
BACKGROUND_BGR = (90, 110, 120)  # a plain wall colour around the pasted photo
PATCH_PX = 16  # top-left square whose grey level encodes a video frame's number
PATCH_STEP = 10  # grey level per frame number (so at most 25 frames); MJPG keeps it within a few levels


def read_astronaut() -> np.ndarray:
    return cv2.imread(str(BUILTIN_IMAGES["astronaut"]))


def place_face(photo: np.ndarray, size: tuple[int, int], face_fraction: float, angle: float = 0.0,
               gain: float = 1.0) -> np.ndarray:
    """A ``size`` (w, h) frame with the astronaut's face centred, its side ``face_fraction`` of the
    frame height, rotated ``angle`` degrees and brightness multiplied by ``gain``."""
    width, height = size
    scale = face_fraction * height / ASTRONAUT_FACE_PX
    matrix = cv2.getRotationMatrix2D(ASTRONAUT_FACE_CENTRE, angle, scale)
    matrix[:, 2] += (width / 2 - ASTRONAUT_FACE_CENTRE[0], height / 2 - ASTRONAUT_FACE_CENTRE[1])
    frame = cv2.warpAffine(photo, matrix, (width, height), borderValue=BACKGROUND_BGR)
    return cv2.convertScaleAbs(frame, alpha=gain)


def frame_number(image: np.ndarray) -> int:
    return round(float(image[:PATCH_PX, :PATCH_PX].mean()) / PATCH_STEP)


def write_video(path: Path, frames: int, fps: float, size: tuple[int, int] = (320, 240)) -> Path:
    """An MJPG .avi (encodes without extra codecs) of the photo, frame number in the corner patch."""
    assert (frames - 1) * PATCH_STEP <= 255, "too many frames to number"
    base = cv2.resize(read_astronaut(), size)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened(), "OpenCV cannot write MJPG here"
    for number in range(frames):
        image = base.copy()
        image[:PATCH_PX, :PATCH_PX] = number * PATCH_STEP
        writer.write(image)
    writer.release()
    return path


@pytest.fixture(scope="session")
def astronaut_bgr() -> np.ndarray:
    return read_astronaut()


@pytest.fixture(scope="session")
def face_free_images() -> dict[str, np.ndarray]:
    """Scenes without a face, at camera size: a coffee cup and a grass texture (scikit-image)."""
    data = pytest.importorskip("skimage.data")
    coffee = cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR)
    grass = cv2.cvtColor(data.grass(), cv2.COLOR_GRAY2BGR)
    return {"coffee": cv2.resize(coffee, (640, 480)), "grass": cv2.resize(grass, (640, 480))}


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., Path]:
    """make_video(frames, fps, name="clip.avi") -> path of a fresh video in tmp_path."""
    def make(frames: int, fps: float, name: str = "clip.avi") -> Path:
        return write_video(tmp_path / name, frames, fps)
    return make
