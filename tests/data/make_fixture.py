"""Build tests/data/mini/: small FER2013 and FER+ archives in the real format, from ../shared/data.

Real faces, so the toolchain and the shipped model are tested on real data on a fresh clone.
Per label: 30 FER+ PrivateTest faces (the shipped model's accuracy fixture), 20 Training and
5 PublicTest faces of each archive (the toolchain smoke run). Seeded; re-run to reproduce:

    python tests/data/make_fixture.py ../shared/data tests/data/mini
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

PER_LABEL = {"Training": 20, "PublicTest": 5, "PrivateTest": 30}
SEED = 7


def _pick(labels: np.ndarray, usage: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rows = []
    for split, n in PER_LABEL.items():
        for k in range(7):
            pool = np.flatnonzero((usage == split) & (labels == k))
            rows.append(rng.choice(pool, min(n, len(pool)), replace=False))
    return np.sort(np.concatenate(rows))


def main(src: str, dst: str) -> None:
    rng = np.random.default_rng(SEED)
    out = Path(dst)
    out.mkdir(parents=True, exist_ok=True)
    fer = np.load(Path(src) / "fer2013.npz")
    rows = _pick(fer["labels"], fer["usage"], rng)
    np.savez_compressed(out / "fer2013.npz", images=fer["images"][rows], labels=fer["labels"][rows],
                        classes=fer["classes"], usage=fer["usage"][rows], names=fer["names"][rows])
    plus = np.load(Path(src) / "ferplus.npz")
    cols = [str(c) for c in plus["vote_columns"]]
    order = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]
    majority = plus["votes"].argmax(axis=1)
    label = np.array([order.index(cols[m]) if cols[m] in order else -1 for m in majority])
    rows = _pick(label, plus["usage"], rng)
    np.savez_compressed(out / "ferplus.npz", images=plus["images"][rows], votes=plus["votes"][rows],
                        vote_columns=plus["vote_columns"], usage=plus["usage"][rows], names=plus["names"][rows])


if __name__ == "__main__":
    main(*sys.argv[1:3])
