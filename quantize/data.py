"""Load FER2013 and FER+ archives into one label space (the daemon's 7 expressions).

Training uses both label sets of the same faces: FER2013's single label and FER+'s ten
crowd votes (Barsoum et al., ICMI 2016), as soft targets. Splits follow the dataset's
``usage`` column: train on ``Training``, select on ``PublicTest``, report ``PrivateTest``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LABELS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
"""Model output order. Same order as FER2013's labels 0..6."""

SPLITS = ("Training", "PublicTest", "PrivateTest")
FER2013_FILE = "fer2013.npz"
FERPLUS_FILE = "ferplus.npz"
IMAGE_SHAPE = (48, 48)

FERPLUS_DROP_MAJORITY = ("contempt", "unknown", "NF")
"""Images whose FER+ majority vote is one of these have no 7-class ground truth."""


class DataError(ValueError):
    """A data archive is missing or not what the toolchain expects."""


@dataclass(frozen=True)
class Split:
    """Faces of one split with soft targets (rows sum to 1) and hard labels for accuracy."""

    name: str
    source: str
    images: np.ndarray  # uint8 (n, 48, 48)
    targets: np.ndarray  # float32 (n, 7)
    labels: np.ndarray  # int64 (n,)
    dropped: int = 0
    ties: int = 0


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _open(data_dir: Path, filename: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    path = Path(data_dir) / filename
    if not path.is_file():
        raise DataError(f"{path} not found: pass --data DIR, the folder holding {FER2013_FILE} and {FERPLUS_FILE}")
    try:
        archive = np.load(path)
    except Exception as exc:  # numpy raises several types for a bad zip
        raise DataError(f"{path} is not a readable NumPy archive ({exc})") from exc
    missing = [k for k in keys if k not in archive.files]
    if missing:
        raise DataError(f"{path} lacks keys {missing}; expected {list(keys)}")
    arrays = {k: archive[k] for k in keys}
    if arrays["images"].ndim != 3 or arrays["images"].shape[1:] != IMAGE_SHAPE or arrays["images"].dtype != np.uint8:
        raise DataError(f"{path}: images must be uint8 (n, 48, 48), got {arrays['images'].dtype} {arrays['images'].shape}")
    return arrays


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def load_fer2013(data_dir: Path, split: str) -> Split:
    """FER2013 with its original single labels (one-hot targets)."""
    _check_split(split)
    a = _open(data_dir, FER2013_FILE, ("images", "labels", "usage"))
    keep = a["usage"] == split
    labels = a["labels"][keep].astype(np.int64)
    return Split(split, "fer2013", a["images"][keep], np.eye(len(LABELS), dtype=np.float32)[labels], labels)


def load_ferplus(data_dir: Path, split: str) -> Split:
    """FER+ with vote distributions over our 7 labels.

    Rule (stated in every report): drop images whose majority vote is contempt, unknown or NF;
    a tie between labels is broken by column order of our 7 labels (first wins) and counted.
    """
    _check_split(split)
    a = _open(data_dir, FERPLUS_FILE, ("images", "votes", "usage", "vote_columns"))
    keep = a["usage"] == split
    votes = a["votes"][keep].astype(np.float32)
    columns = [str(c) for c in a["vote_columns"]]
    ours = np.stack([votes[:, columns.index(name)] for name in LABELS], axis=1)
    majority_col = votes.argmax(axis=1)
    dropped = np.isin(np.array(columns)[majority_col], FERPLUS_DROP_MAJORITY) | (ours.sum(axis=1) == 0)
    ours, images = ours[~dropped], a["images"][keep][~dropped]
    top = ours.max(axis=1, keepdims=True)
    ties = int(((ours == top).sum(axis=1) > 1).sum())
    return Split(split, "ferplus", images, ours / ours.sum(axis=1, keepdims=True), ours.argmax(axis=1).astype(np.int64),
                 dropped=int(dropped.sum()), ties=ties)


def data_hashes(data_dir: Path) -> dict[str, str]:
    return {name: sha256_of(Path(data_dir) / name) for name in (FER2013_FILE, FERPLUS_FILE)}
