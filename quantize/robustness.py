"""Compare Keras models on PublicTest as a camera would show the faces: clean, and under each
degradation a live crop adds (blur, darkness, low contrast, sensor noise, box drift, roll).

PublicTest only (the selection split): this chooses between models, it reports nothing final.
The clean row also says whether a gain is more than chance: faces only one model gets right,
each way, and the exact two-sided McNemar p-value of that split.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from quantize.data import load_fer2013, load_ferplus
from quantize.model import load_keras
from quantize.provenance import provenance

BLUR_SIGMA = 1.0  # px at 48x48: focus or motion blur of a webcam crop
DARKEN = 60  # grey levels: an unlit cabin or a room at dusk
LOW_CONTRAST = 0.5  # backlight, haze
NOISE_SIGMA = 8.0  # grey levels: a small sensor at high gain
SHIFT = 0.08  # of the side: detector box drift frame to frame
ZOOM = 0.12  # detector box size error
ROLL_DEG = 12.0  # head roll left after eye levelling

SEED = 0


def _warp(images: np.ndarray, dx: float = 0.0, scale: float = 1.0, angle: float = 0.0) -> np.ndarray:
    side = images.shape[1]
    m = cv2.getRotationMatrix2D(((side - 1) / 2, (side - 1) / 2), angle, scale)
    m[0, 2] += dx * side
    return np.stack([cv2.warpAffine(i, m, (side, side), borderMode=cv2.BORDER_REFLECT) for i in images])


def _clip(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 255).astype(np.uint8)


CONDITIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "clean": lambda x: x,
    f"blur sigma {BLUR_SIGMA:g} px": lambda x: np.stack([cv2.GaussianBlur(i, (0, 0), BLUR_SIGMA) for i in x]),
    f"darker by {DARKEN}": lambda x: _clip(x.astype(np.int16) - DARKEN),
    f"contrast x{LOW_CONTRAST:g}": lambda x: _clip((x.astype(np.float32) - 128) * LOW_CONTRAST + 128),
    f"noise sigma {NOISE_SIGMA:g}": lambda x: _clip(x + np.random.default_rng(SEED).normal(0, NOISE_SIGMA, x.shape)),
    f"shift {SHIFT:.0%}": lambda x: _warp(x, dx=SHIFT),
    f"zoom out {ZOOM:.0%}": lambda x: _warp(x, scale=1 - ZOOM),
    f"zoom in {ZOOM:.0%}": lambda x: _warp(x, scale=1 + ZOOM),
    f"roll {ROLL_DEG:g} deg": lambda x: _warp(x, angle=ROLL_DEG),
}


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar test: is a split of discordant faces this uneven chance?"""
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def compare(models: list[str], data_dir: str, out_file: str, command: str = "", log=print) -> dict:
    if len(set(models)) != len(models):
        raise ValueError(f"--model given twice ({', '.join(models)}): give different models to compare")
    splits = {"fer2013": load_fer2013(data_dir, "PublicTest"), "ferplus": load_ferplus(data_dir, "PublicTest")}
    hits: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for path in models:
        model = load_keras(path, compile=False)
        hits[path] = {cond: {name: model.predict(fn(s.images)[..., None].astype(np.float32), batch_size=512,
                                                 verbose=0).argmax(1) == s.labels for name, s in splits.items()}
                      for cond, fn in CONDITIONS.items()}
    table = {cond: {path: {name: round(float(h.mean()), 4) for name, h in hits[path][cond].items()} for path in models}
             for cond in CONDITIONS}
    result = {"command": command, **provenance(data_dir, **{f"model{i}": m for i, m in enumerate(models, 1)}),
              "split": "PublicTest", "ferplus_rule": "plurality", "accuracy": table,
              "mean_over_degradations": {path: {name: round(float(np.mean([table[c][path][name] for c in CONDITIONS
                                                                              if c != "clean"])), 4)
                                                for name in splits} for path in models}}
    if len(models) == 2:
        a, b = (hits[m]["clean"] for m in models)
        result["clean_paired"] = {name: {"only_first": int((a[name] & ~b[name]).sum()),
                                         "only_second": int((b[name] & ~a[name]).sum()),
                                         "mcnemar_p": round(mcnemar_p(int((a[name] & ~b[name]).sum()),
                                                                      int((b[name] & ~a[name]).sum())), 4)}
                                  for name in splits}
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    Path(out_file).write_text(json.dumps(result, indent=2) + "\n")
    log("PublicTest accuracy, FER2013 / FER+ plurality, %:")
    log(f"| condition | {' | '.join(models)} |")
    log(f"| --- |{' --- |' * len(models)}")
    rows = {**table, "mean of the degradations": result["mean_over_degradations"]}
    for cond, by_model in rows.items():
        log(f"| {cond} | " + " | ".join(f"{v['fer2013'] * 100:.1f} / {v['ferplus'] * 100:.1f}"
                                         for v in by_model.values()) + " |")
    if "clean_paired" in result:
        log(f"clean, faces only one model gets right (first / second) and McNemar p: {json.dumps(result['clean_paired'])}")
    return result
