"""Carry FER2013's Training labels over to FER+'s sharp copies of the same faces.

In the FER2013 archive we were given, every ``Training`` image is heavily blurred (median
Laplacian variance ~6, against ~2000 for its test splits and for FER+): training on them
teaches the model blurred faces. FER+ holds the same faces losslessly but names them by csv row,
and the FER2013 archive's names do not carry that row. So faces are paired by content: blur the
FER+ image as much as the FER2013 one, compare 8x8 thumbnails (zero-mean, unit-norm), and keep
a pair only when the best match is near-identical and clearly ahead of the second best.
"""
from __future__ import annotations

import cv2
import numpy as np

from quantize.data import Split

SHARP_FLOOR = 50.0
"""Median Laplacian variance under which a split counts as blurred (sharp 48x48 faces: ~2000)."""
MATCH_BLUR_SIGMA = 3.0  # Gaussian sigma that made FER+ thumbnails match FER2013's best (3 vs 5 tried)
THUMB = 8
MIN_SIMILARITY = 0.995  # cosine of the thumbnails; true pairs measured 0.999 at the median
MIN_LEAD = 0.01  # over the second-best candidate; duplicates in FER2013 make near-ties
CHUNK = 4096


def sharpness(images: np.ndarray) -> float:
    return float(np.median([cv2.Laplacian(image, cv2.CV_64F).var() for image in images]))


def _thumbs(images: np.ndarray, sigma: float) -> np.ndarray:
    out = np.stack([cv2.resize(cv2.GaussianBlur(i.astype(np.float32), (0, 0), sigma) if sigma else i.astype(np.float32),
                               (THUMB, THUMB), interpolation=cv2.INTER_AREA).ravel() for i in images])
    out -= out.mean(axis=1, keepdims=True)
    out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-6
    return out


def pair_faces(reference: np.ndarray, faces: np.ndarray, blur_sigma: float = 0.0) -> np.ndarray:
    """For each of ``faces``, the index of its twin in ``reference``, or -1 when unsure.

    ``blur_sigma`` blurs ``faces`` first, to compare a sharp copy with a blurred one.
    """
    a, b = _thumbs(reference, 0.0), _thumbs(faces, blur_sigma)
    twins = np.full(len(b), -1, np.int64)
    for start in range(0, len(b), CHUNK):
        similarity = b[start:start + CHUNK] @ a.T
        top2 = np.argpartition(-similarity, 1, axis=1)[:, :2]
        values = np.take_along_axis(similarity, top2, axis=1)
        order = np.argsort(-values, axis=1)
        best, (first, second) = np.take_along_axis(top2, order, 1)[:, 0], np.take_along_axis(values, order, 1).T
        sure = (first >= MIN_SIMILARITY) & (first - second >= MIN_LEAD)
        twins[start:start + CHUNK][sure] = best[sure]
    return twins


def match_labels(blurred: Split, sharp: Split) -> np.ndarray:
    """For each face of ``sharp``, the label of its twin in ``blurred``, or -1 when unsure."""
    twins = pair_faces(blurred.images, sharp.images, MATCH_BLUR_SIGMA)
    return np.where(twins >= 0, blurred.labels[twins], -1)
