"""Test faces that are also Training faces.

FER2013's csv holds some photos twice, in different splits: about 8% of each FER+ test split is
byte-identical to a FER+ Training face. A model may have learnt those faces' labels, so every
report also gives the accuracy without them. FER+ pixels are lossless, so identity is exact
there; a FER2013 test face counts as a duplicate when its FER+ twin (quantize.match) does.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from quantize.data import FERPLUS_FILE, Split, open_archive
from quantize.match import pair_faces


def _digests(images: np.ndarray) -> list[bytes]:
    return [hashlib.sha1(image.tobytes()).digest() for image in images]


def training_duplicates(data_dir: str | Path, split: Split) -> np.ndarray:
    """True for each face of ``split`` (a test split) that is also a Training face."""
    a = open_archive(Path(data_dir), FERPLUS_FILE, ("images", "usage"))
    training = set(_digests(a["images"][a["usage"] == "Training"]))
    if split.source == "ferplus":
        return np.array([d in training for d in _digests(split.images)], bool)
    same_split = a["images"][a["usage"] == split.name]
    in_training = np.array([d in training for d in _digests(same_split)], bool)
    twins = pair_faces(same_split, split.images)  # both sharp: no blur
    return np.where(twins >= 0, in_training[np.maximum(twins, 0)], False)
