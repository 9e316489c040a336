"""The frame sets of bench/pipeline_fps.py: real photos made into short videos.

    python bench/frames.py --out build/bench-frames

Background: scikit-image's ``rocket`` photo (a launch pad, no face). Faces: the head of
scikit-image's ``astronaut`` photo (Eileen Collins, NASA, public domain), pasted with a soft
elliptical edge at 0, 1 or 3 places that move and grow and shrink from frame to frame, so the
tracker follows motion. The result is deterministic and written as MJPG .avi, what USB webcams
send, so both pipelines decode the same frames and decoding is timed as the capture stage.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np

try:
    from skimage import data
except ImportError:
    raise SystemExit("the bench frames are scikit-image's photos: pip install -e '.[bench]'") from None

RESOLUTIONS = ((640, 480), (1280, 720))
FACE_COUNTS = (0, 1, 3)
VIDEO_FPS = 30.0
FRAMES = 150  # 5 s at VIDEO_FPS
HEAD = (slice(20, 240), slice(140, 310))  # astronaut rows, cols: hair to chin, ear to ear
HEAD_FACE_PX = 93  # BlazeFace's face box side in that photo
FEATHER = 0.08  # soft edge of the pasted ellipse, as a fraction of the patch width

# Face paths in fractions of the frame: centre x, centre y, face side / frame height; each
# value is base + amplitude * sin(2 pi (cycles * t + phase)) over the clip, t in [0, 1).
# (base, amplitude, cycles, phase) for x, y, size.
PATHS = {
    1: [((0.50, 0.25, 1, 0.0), (0.50, 0.06, 2, 0.0), (0.27, 0.07, 2, 0.25))],
    3: [((0.20, 0.04, 1, 0.0), (0.45, 0.05, 1, 0.3), (0.20, 0.03, 2, 0.0)),
        ((0.50, 0.04, 1, 0.5), (0.55, 0.05, 1, 0.6), (0.24, 0.03, 2, 0.5)),
        ((0.80, 0.04, 1, 0.2), (0.45, 0.05, 1, 0.9), (0.17, 0.02, 2, 0.7))],
}


@dataclass(frozen=True)
class FrameSet:
    name: str  # e.g. "640x480 3 faces"
    path: Path
    width: int
    height: int
    faces: int


def _wave(spec: tuple[float, float, int, float], t: float) -> float:
    base, amplitude, cycles, phase = spec
    return base + amplitude * math.sin(2 * math.pi * (cycles * t + phase))


@cache
def _background(width: int, height: int) -> np.ndarray:
    photo = cv2.cvtColor(data.rocket(), cv2.COLOR_RGB2BGR)
    h, w = photo.shape[:2]
    scale = max(width / w, height / h)
    big = cv2.resize(photo, (math.ceil(w * scale), math.ceil(h * scale)), interpolation=cv2.INTER_CUBIC)
    top, left = (big.shape[0] - height) // 2, (big.shape[1] - width) // 2
    return big[top:top + height, left:left + width]


@cache
def _head() -> tuple[np.ndarray, np.ndarray]:
    """The head patch (BGR float) and its soft elliptical alpha mask (h, w, 1)."""
    patch = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)[HEAD].astype(np.float32)
    h, w = patch.shape[:2]
    mask = np.zeros((h, w), np.float32)
    feather = max(1, round(FEATHER * w))
    cv2.ellipse(mask, (w // 2, h // 2), (w // 2 - feather, h // 2 - feather), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), feather / 2)
    return patch, mask[..., None]


def _paste(frame: np.ndarray, patch: np.ndarray, mask: np.ndarray, cx: float, cy: float, face_px: float) -> None:
    scale = face_px / HEAD_FACE_PX
    h, w = patch.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small, alpha = cv2.resize(patch, size, interpolation=cv2.INTER_AREA), cv2.resize(mask, size)[..., None]
    x0, y0 = round(cx - size[0] / 2), round(cy - size[1] / 2)
    fx0, fy0 = max(x0, 0), max(y0, 0)
    fx1, fy1 = min(x0 + size[0], frame.shape[1]), min(y0 + size[1], frame.shape[0])
    if fx0 >= fx1 or fy0 >= fy1:
        return
    src = (slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0))
    region = frame[fy0:fy1, fx0:fx1].astype(np.float32)
    frame[fy0:fy1, fx0:fx1] = np.round(region + alpha[src] * (small[src] - region)).astype(np.uint8)


def render(width: int, height: int, faces: int, index: int, frames: int = FRAMES) -> np.ndarray:
    """Frame ``index`` of the clip with ``faces`` faces at width x height (BGR uint8)."""
    frame = _background(width, height).copy()
    patch, mask = _head()
    t = index / frames
    for x, y, size in PATHS.get(faces, []):
        _paste(frame, patch, mask, _wave(x, t) * width, _wave(y, t) * height, _wave(size, t) * height)
    return frame


def build_frame_sets(out_dir: str | Path, frames: int = FRAMES) -> list[FrameSet]:
    """Write every resolution x face-count clip (overwriting) and describe them."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sets = []
    for width, height in RESOLUTIONS:
        for faces in FACE_COUNTS:
            path = out_dir / f"{width}x{height}_{faces}faces.avi"
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), VIDEO_FPS, (width, height))
            if not writer.isOpened():
                raise RuntimeError(f"OpenCV cannot write MJPG video to {path}")
            for i in range(frames):
                writer.write(render(width, height, faces, i, frames))
            writer.release()
            sets.append(FrameSet(f"{width}x{height} {faces} face{'s' if faces != 1 else ''}", path, width, height,
                                 faces))
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="build/bench-frames")
    parser.add_argument("--frames", type=int, default=FRAMES)
    args = parser.parse_args()
    if args.frames < 1:
        parser.error(f"--frames {args.frames}: a video needs at least 1 frame")
    for s in build_frame_sets(args.out, args.frames):
        print(f"{s.name}: {s.path}")


if __name__ == "__main__":
    main()
