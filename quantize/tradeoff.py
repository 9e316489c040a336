"""How much one bar can be bought with the other by moving the decision alone.

A per-class offset added to the model's log-probabilities (a prior shift) changes no weight and
costs nothing on the device, so it is the cheapest way to move accuracy between FER2013's labels
and FER+'s. Fitted toward each label set in turn and swept between the two, it traces what the
shipped network can give each bar. Everything is measured on PublicTest, the selection split,
by cross-fitting: offsets fitted on one half of the faces are scored on the other half, and the
two halves' scores averaged, so the figures are not the fit's own.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from quantize.convert import run_tflite
from quantize.data import LABELS, load_fer2013, load_ferplus
from quantize.provenance import provenance

OFFSET_GRID = np.round(np.arange(-1.0, 1.0001, 0.05), 2)
"""Log-probability offsets tried per class: ±1 is a factor of e in a class's odds. On PublicTest
a ±2 grid fitted the same offsets (the largest, 1.0, for fear toward FER2013)."""
FIT_SWEEPS = 3
"""Coordinate-ascent passes over the 7 classes: on PublicTest the third still moved one offset,
a fourth and fifth moved none."""
SWEEP_STEPS = 11
"""Points from the FER+-fitted offsets (0) to the FER2013-fitted ones (1), both included."""
FOLD_SEED = 0
TARGETS = {"fer2013": "fer2013", "ferplus_majority": "ferplus_majority"}
"""The label set each end of the sweep is fitted to: FER2013's own, and FER+'s majority rule (the
rule of the 85% bar)."""
EPSILON = 1e-6
"""Keeps log() finite on an int8 probability of exactly 0."""


def accuracy(log_probs: np.ndarray, labels: np.ndarray, offsets: np.ndarray) -> float:
    return float(((log_probs + offsets).argmax(axis=1) == labels).mean())


def fit_offsets(log_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-class offsets maximising accuracy, by coordinate ascent on ``OFFSET_GRID``; on a tie,
    the offset nearest 0 (no change without a gain)."""
    offsets = np.zeros(log_probs.shape[1])
    for _ in range(FIT_SWEEPS):
        for c in range(len(offsets)):
            def score(value: float) -> tuple[float, float]:
                trial = offsets.copy()
                trial[c] = value
                return accuracy(log_probs, labels, trial), -abs(value)
            offsets[c] = max(OFFSET_GRID, key=score)
    return offsets


def halves(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    return order[: n // 2], order[n // 2:]


def cross_fitted_sweep(sets: dict[str, tuple[np.ndarray, np.ndarray]], seed: int = FOLD_SEED) -> list[dict]:
    """Accuracy per label set at each point of the sweep (and with no offset), fitted on one half
    of every set and scored on the other, averaged over both directions.

    ``sets``: name -> (log-probabilities (n, 7), labels (n,)); must hold the ``TARGETS`` sets.
    """
    rng = np.random.default_rng(seed)
    split = {name: halves(len(labels), rng) for name, (_, labels) in sets.items()}
    points = [None, *np.linspace(0.0, 1.0, SWEEP_STEPS)]  # None: the model as it is
    scores = np.zeros((len(points), len(sets)))
    for fit_half, score_half in ((0, 1), (1, 0)):
        fitted = {end: fit_offsets(sets[target][0][split[target][fit_half]], sets[target][1][split[target][fit_half]])
                  for end, target in TARGETS.items()}
        for i, t in enumerate(points):
            offsets = np.zeros(len(LABELS)) if t is None else t * fitted["fer2013"] + (1 - t) * fitted["ferplus_majority"]
            for j, (name, (log_probs, labels)) in enumerate(sets.items()):
                rows = split[name][score_half]
                scores[i, j] += accuracy(log_probs[rows], labels[rows], offsets) / 2
    return [{"toward_fer2013": None if t is None else round(float(t), 2),
             **{name: round(float(s), 4) for name, s in zip(sets, row)}} for t, row in zip(points, scores)]


def tradeoff(model_path: str, data_dir: str, out_path: str, command: str = "", log=print) -> dict:
    """Both views averaged, as the daemon's smoothing sees a still face (quantize.evaluate)."""
    sets = {"fer2013": load_fer2013(data_dir, "PublicTest"), "ferplus": load_ferplus(data_dir, "PublicTest"),
            "ferplus_majority": load_ferplus(data_dir, "PublicTest", "majority")}
    scored = {}
    for name, split in sets.items():
        log(f"running the model on {len(split.labels)} PublicTest faces ({name}), both views")
        probs = (run_tflite(Path(model_path), split.images) + run_tflite(Path(model_path), split.images[:, :, ::-1])) / 2
        scored[name] = (np.log(probs + EPSILON), split.labels)
    rows = cross_fitted_sweep(scored)
    full_fit = {end: dict(zip(LABELS, np.round(fit_offsets(*scored[target]), 2).tolist()))
                for end, target in TARGETS.items()}
    log(f"{'offsets':>24s} " + " ".join(f"{name:>16s}" for name in sets))
    for row in rows:
        t = row["toward_fer2013"]
        what = "none (the model)" if t is None else f"{t:.1f} (0 FER+, 1 FER2013)"
        log(f"{what:>24s} " + " ".join(f"{row[name]:16.4f}" for name in sets))
    result = {
        "command": command,
        **provenance(data_dir, int8_model=model_path),
        "split": "PublicTest, cross-fitted on halves (see quantize/tradeoff.py)",
        "views": "both (the face and its mirror), averaged",
        "offsets_fitted_on_all_of_publictest": full_fit,
        "sweep": rows,
    }
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text(json.dumps(result, indent=2))
    log(f"wrote {out_path}")
    return result
