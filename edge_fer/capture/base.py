"""What every frame source hands to the pipeline."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One camera frame. ``image`` is HxWx3 uint8 in BGR order (OpenCV's), whatever the source."""

    image: np.ndarray
    timestamp: float  # time.monotonic() at capture
    index: int  # frames delivered by this source so far, starting at 0


class FrameSource(Protocol):
    """A camera, file or stream. ``read`` returns the newest frame, or None at end of input."""

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...
