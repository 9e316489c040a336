"""Whether a frame shows anything: a covered lens, a lens cap or darkness still delivers frames,
and without this check each would read as "no face", i.e. an absent driver.

Judged on a 32x24 area-averaged thumbnail: the averaging removes sensor noise (a black frame with
noise of sigma 8 gray levels has a thumbnail spread of 0.0), so what remains is the scene's own
structure. Measured (``tests/test_blank.py`` repeats it): the packaged astronaut photo at 640x480
has a spread of 65.7 at full brightness, 19.1 at 0.3 (its face still found) and 7.1 at 0.12 (no
longer found by short-range); black, flat grey and black under heavy noise stay at or below 0.6.
A hand held close to the lens is not always flat (a lit skin gradient measured 19.2): not caught.
"""
from __future__ import annotations

import cv2
import numpy as np

THUMBNAIL = (32, 24)
BLANK_SPREAD = 2.0
"""Standard deviation of the thumbnail's gray levels under which a frame shows nothing: 3x the
flattest noisy frame measured (0.6), under a third of the dimmest scene measured (7.1)."""


def is_blank(image_bgr: np.ndarray) -> bool:
    thumb = cv2.resize(image_bgr, THUMBNAIL, interpolation=cv2.INTER_AREA)
    return float(thumb.std()) < BLANK_SPREAD
