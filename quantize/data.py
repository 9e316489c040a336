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
FERPLUS_RULES = {
    "plurality": ("the label with the most of the 10 votes; faces whose top column is contempt, unknown "
                  "or NF dropped; a tie for the top goes to the first column (our 7 labels in label order, "
                  "then contempt, unknown, NF) and is counted"),
    "majority": ("FER+'s own majority rule (microsoft/FERPlus ferplus.py, used for its published "
                 "accuracies): single votes removed as outliers, then the label needs more than half of "
                 "the remaining votes; faces without one, or whose majority is contempt, unknown or NF, dropped"),
}
FERPLUS_OUTLIER_VOTES = 1
"""FER+'s majority rule removes a label with this many votes or fewer (one annotator's outlier)."""


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


def archive_path(data_dir: Path, filename: str) -> Path:
    path = Path(data_dir) / filename
    if not path.is_file():
        raise DataError(f"{path} not found: pass --data DIR, the folder holding {FER2013_FILE} and {FERPLUS_FILE}")
    return path


ARRAY_KINDS = {"images": (3, "u"), "labels": (1, "iu"), "usage": (1, "U"), "votes": (2, "iuf"), "vote_columns": (1, "U")}
"""Each key's dimensions and NumPy dtype kinds: a (n, 1) label column would broadcast against the
predictions and give wrong accuracies without a word."""


def open_archive(data_dir: Path, filename: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    path = archive_path(data_dir, filename)
    try:
        with np.load(path) as archive:
            missing = [k for k in keys if k not in archive.files]
            if missing:
                raise DataError(f"{path} lacks keys {missing}; expected {list(keys)}")
            arrays = {k: archive[k] for k in keys}  # decompresses: a damaged member fails here
    except DataError:
        raise
    except Exception as exc:  # numpy, zipfile and zlib raise several types for a bad archive
        raise DataError(f"{path} is damaged or not a NumPy archive ({type(exc).__name__}: {exc}); copy it again "
                        "and compare its sha256 with the data README's") from exc
    _check_arrays(path, arrays)
    return arrays


def _check_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    for key, array in arrays.items():
        ndim, kinds = ARRAY_KINDS[key]
        if array.ndim != ndim or array.dtype.kind not in kinds:
            raise DataError(f"{path}: {key} must be a {ndim}-D array of kind {kinds!r} (NumPy dtype.kind), "
                            f"got {array.dtype} {array.shape}")
    if arrays["images"].shape[1:] != IMAGE_SHAPE or arrays["images"].dtype != np.uint8:
        raise DataError(f"{path}: images must be uint8 (n, 48, 48), got {arrays['images'].dtype} {arrays['images'].shape}")
    rows = len(arrays["images"])
    short = [f"{k} has {len(a)}" for k, a in arrays.items() if k not in ("images", "vote_columns") and len(a) != rows]
    if short:
        raise DataError(f"{path}: every key needs one row per image ({rows}), but " + ", ".join(short))
    if "labels" in arrays and len(arrays["labels"]) and not (0 <= arrays["labels"].min() <= arrays["labels"].max() < len(LABELS)):
        raise DataError(f"{path}: labels must be 0..{len(LABELS) - 1} ({', '.join(LABELS)}), found "
                        f"{arrays['labels'].min()}..{arrays['labels'].max()}")
    if "vote_columns" in arrays:
        columns = {str(c) for c in arrays["vote_columns"]}
        missing = [c for c in (*LABELS, *FERPLUS_DROP_MAJORITY) if c not in columns]
        if missing or arrays["votes"].shape[1] != len(arrays["vote_columns"]):
            raise DataError(f"{path}: votes need one column per vote_columns entry, among them "
                            f"{', '.join((*LABELS, *FERPLUS_DROP_MAJORITY))}; missing {missing or 'none'}, votes "
                            f"{arrays['votes'].shape}, vote_columns {len(arrays['vote_columns'])}")


def _rows(path: Path, usage: np.ndarray, split: str) -> np.ndarray:
    keep = usage == split
    if not keep.any():
        raise DataError(f"{path} has no {split} rows (its usage column holds {sorted(set(map(str, usage)))}); "
                        f"the toolchain needs {', '.join(SPLITS)}")
    return keep


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def load_fer2013(data_dir: Path, split: str) -> Split:
    """FER2013 with its original single labels (one-hot targets)."""
    _check_split(split)
    a = open_archive(data_dir, FER2013_FILE, ("images", "labels", "usage"))
    keep = _rows(Path(data_dir) / FER2013_FILE, a["usage"], split)
    labels = a["labels"][keep].astype(np.int64)
    return Split(split, "fer2013", a["images"][keep], np.eye(len(LABELS), dtype=np.float32)[labels], labels)


def load_ferplus(data_dir: Path, split: str, rule: str = "plurality") -> Split:
    """FER+ with vote distributions over our 7 labels; hard labels by ``rule`` (FERPLUS_RULES,
    stated in every report). Targets are the raw votes over our 7 whatever the rule."""
    _check_split(split)
    if rule not in FERPLUS_RULES:
        raise DataError(f"unknown FER+ rule {rule!r}; choose one of {', '.join(FERPLUS_RULES)}")
    a = open_archive(data_dir, FERPLUS_FILE, ("images", "votes", "usage", "vote_columns"))
    keep = _rows(Path(data_dir) / FERPLUS_FILE, a["usage"], split)
    votes = a["votes"][keep].astype(np.float32)
    columns = [str(c) for c in a["vote_columns"]]
    order = [columns.index(name) for name in LABELS] + [columns.index(name) for name in FERPLUS_DROP_MAJORITY]
    votes = votes[:, order]  # our 7 labels first, in label order: argmax then breaks ties by that order
    if rule == "majority":
        counted = np.where(votes > FERPLUS_OUTLIER_VOTES, votes, 0)
        winner = counted.argmax(axis=1)
        has_label = counted.max(axis=1) > counted.sum(axis=1) / 2
        ties = 0  # a strict majority has no tie
    else:
        winner = votes.argmax(axis=1)
        has_label = votes.max(axis=1) > 0
        ties = (votes == votes.max(axis=1, keepdims=True)).sum(axis=1) > 1
    kept = has_label & (winner < len(LABELS))
    ours = votes[kept, :len(LABELS)]
    return Split(split, "ferplus", a["images"][keep][kept], ours / ours.sum(axis=1, keepdims=True),
                 winner[kept].astype(np.int64), dropped=int((~kept).sum()), ties=int(np.sum(ties & kept)))


def data_hashes(data_dir: Path) -> dict[str, str]:
    return {name: sha256_of(Path(data_dir) / name) for name in (FER2013_FILE, FERPLUS_FILE)}
