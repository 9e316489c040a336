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
    """A camera, file or stream.

    ``read`` returns the newest frame not yet returned, or None when none came within its timeout
    or at end of input; ``ended`` tells the two apart. ``dropped_frames`` counts frames
    overwritten by newer ones before they were read.
    """

    def read(self, timeout: float | None = ...) -> Frame | None: ...

    @property
    def ended(self) -> bool: ...

    @property
    def dropped_frames(self) -> int: ...

    def close(self) -> None: ...
