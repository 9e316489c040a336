"""Classification figures reported in the model card: plain NumPy, no TensorFlow."""
from __future__ import annotations

import numpy as np

ECE_BINS = 15  # Guo et al. 2017, "On Calibration of Modern Neural Networks"


def confusion(labels: np.ndarray, predicted: np.ndarray, n: int) -> np.ndarray:
    """Rows: true label; columns: predicted."""
    return np.bincount(labels * n + predicted, minlength=n * n).reshape(n, n)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            ece += in_bin.mean() * abs((predicted[in_bin] == labels[in_bin]).mean() - confidence[in_bin].mean())
    return float(ece)


def classification_report(probs: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> dict:
    n = len(names)
    cm = confusion(labels, probs.argmax(axis=1), n)
    support, predicted_count, hits = cm.sum(axis=1), cm.sum(axis=0), np.diag(cm)
    recall = np.divide(hits, support, out=np.zeros(n), where=support > 0)
    precision = np.divide(hits, predicted_count, out=np.zeros(n), where=predicted_count > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n), where=(precision + recall) > 0)
    return {
        "faces": int(len(labels)),
        "accuracy": round(float(hits.sum() / max(1, len(labels))), 4),
        "macro_f1": round(float(f1[support > 0].mean()), 4),
        "ece": round(expected_calibration_error(probs, labels), 4),
        "recall": {name: round(float(r), 4) for name, r in zip(names, recall)},
        "confusion": cm.tolist(),
    }
