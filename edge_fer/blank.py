"""Whether a frame shows anything: a covered lens, a lens cap or darkness still delivers frames,
and without this check each would read as "no face", i.e. an absent driver.

Judged on a 32x24 area-averaged thumbnail: the averaging removes sensor noise (a black frame with
noise of sigma 8 gray levels has a thumbnail spread of 0.0), so what remains is the scene's own
structure. Measured (``tests/test_blank.py`` repeats it): the packaged astronaut photo at 640x480
has a spread of 65.7 at full brightness, 19.1 at 0.3 (its face still found) and 7.1 at 0.12 (no
longer found by short-range); black, flat grey and black under heavy noise stay at or below 0.6.
A hand held close to the lens is not always flat (a lit skin gradient measured 19.2): not caught.
The check costs 0.22 ms on a 640x480 frame and 0.62 ms at 1280x720 (this x86), a tenth of a
frame's whole CPU time, so ``BlankWatch`` makes it a few times a second, not on every frame.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

THUMBNAIL = (32, 24)
BLANK_SPREAD = 2.0
"""Standard deviation of the thumbnail's gray levels under which a frame shows nothing: 3x the
flattest noisy frame measured (0.6), under a third of the dimmest scene measured (7.1)."""


CHECK_INTERVAL_S = 0.25
"""How often a frame is checked; the frames between take the last verdict. A quarter of the
default tracker.max_missed_s (1 s), after which a covered camera counts as lost."""


def is_blank(image_bgr: np.ndarray) -> bool:
    thumb = cv2.resize(image_bgr, THUMBNAIL, interpolation=cv2.INTER_AREA)
    return float(thumb.std()) < BLANK_SPREAD


class BlankWatch:
    """``is_blank`` at most every CHECK_INTERVAL_S; the frames between share the last verdict."""

    def __init__(self) -> None:
        self._checked_at = -math.inf
        self._blank = False

    def blank(self, image_bgr: np.ndarray, now: float, fresh: bool = False) -> bool:
        """``now``: monotonic seconds of the frame; ``fresh``: check this frame whatever the interval."""
        if fresh or not 0 <= now - self._checked_at < CHECK_INTERVAL_S:
            self._checked_at, self._blank = now, is_blank(image_bgr)
        return self._blank
