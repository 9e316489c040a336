"""Measure the crop convention: where each of the daemon's face detectors puts its box on training faces.

The model learns from FER2013's 48x48 crops. On the device the crop comes from a detector box,
so we run that same detector on Training faces (upscaled, centred on a plain grey canvas three
times their size, a camera-like framing; replicated or mirrored borders made BlazeFace miss
faces or see mirror faces) and express the dataset crop relative to the box: its side as a multiple of
the box side, its centre as an offset in box sides. Each detector boxes a face differently (Haar's
box is about 1.14x BlazeFace short-range's, and sits higher), so each gets its own convention; the daemon
reproduces the one for the detector it runs.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from quantize.data import load_ferplus
from quantize.errors import StepError
from quantize.provenance import provenance

FIT_FACES = 2000  # Training faces sampled; the medians settle to 3 decimals well before this
UPSCALE = 4  # 48 -> 192 px
CANVAS = 576  # the upscaled face sits centred on a grey canvas this big (face = 1/3 of the side)
CANVAS_GREY = 128
SEED = 0


def _fit_one(kind: str, faces: np.ndarray) -> dict:
    """One detector's convention, run with the daemon's default settings for it."""
    from edge_fer.config import DetectorConfig
    from edge_fer.detect import build_detector

    defaults = DetectorConfig()
    detector = build_detector(kind, score_threshold=defaults.score_threshold, min_face_px=defaults.min_face_px,
                              max_faces=1)
    side, pad = 48 * UPSCALE, (CANVAS - 48 * UPSCALE) // 2
    scales, offsets, rolls = [], [], []
    for face in faces:
        big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
        canvas = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=CANVAS_GREY)
        found = detector.detect(cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR))
        if not found:
            continue
        x, y, w, h = found[0].box
        box_side = max(w, h)
        crop_center = pad + side / 2
        scales.append(side / box_side)
        offsets.append(((crop_center - (x + w / 2)) / box_side, (crop_center - (y + h / 2)) / box_side))
        if found[0].keypoints is not None:
            (rx, ry), (lx, ly) = found[0].keypoints[0], found[0].keypoints[1]
            rolls.append(np.degrees(np.arctan2(ly - ry, lx - rx)))
    if not scales:
        raise StepError(f"detector {kind} found no face on any of {len(faces)} FER+ Training faces: are these "
                        "archives faces, and are edge_fer/models/face_detection_*.tflite intact?")
    offsets = np.array(offsets)
    fitted_with = {"split": "FER+ Training", "faces": len(faces), "detected": len(scales),
                   "score_threshold": defaults.score_threshold, "min_face_px": defaults.min_face_px,
                   "scale_iqr": [round(float(q), 3) for q in np.percentile(scales, [25, 75])]}
    if rolls:
        fitted_with["median_abs_roll_deg"] = round(float(np.median(np.abs(rolls))), 2)
    return {"scale": round(float(np.median(scales)), 3),
            "center_offset": [round(float(np.median(offsets[:, 0])), 3), round(float(np.median(offsets[:, 1])), 3)],
            "align_eyes": bool(rolls),  # only detectors with eye keypoints can level the eyes
            "fitted_with": fitted_with}


def fit_crop(data_dir: str, out_file: str, command: str = "", log=print) -> dict:
    from edge_fer.detect import DETECTOR_KINDS

    split = load_ferplus(data_dir, "Training")  # FER+'s sharp copies: FER2013's Training images are blurred
    rng = np.random.default_rng(SEED)
    faces = split.images[rng.choice(len(split.images), min(FIT_FACES, len(split.images)), replace=False)]
    by_detector = {}
    for kind in DETECTOR_KINDS:
        by_detector[kind] = _fit_one(kind, faces)
        log(f"crop convention for {kind}: {json.dumps(by_detector[kind])}")
    result = {"by_detector": by_detector, "command": command, **provenance(data_dir)}
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    Path(out_file).write_text(json.dumps(result, indent=2) + "\n")
    return result
