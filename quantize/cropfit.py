"""Measure the crop convention: where the daemon's face detector puts its box on training faces.

The model learns from FER2013's 48x48 crops. On the device the crop comes from a BlazeFace box,
so we run that same detector on Training faces (upscaled, centred on a plain grey canvas three
times their size, a camera-like framing; replicated or mirrored borders made BlazeFace miss
faces or see mirror faces) and express the dataset crop relative to the box: its side as a multiple of
the box side, its centre as an offset in box sides. The daemon reproduces exactly this.
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
DETECTOR = "blazeface-short"
SEED = 0


def fit_crop(data_dir: str, out_file: str, command: str = "", log=print) -> dict:
    from edge_fer.detect.blazeface import BlazeFaceDetector

    split = load_ferplus(data_dir, "Training")  # FER+'s sharp copies: FER2013's Training images are blurred
    rng = np.random.default_rng(SEED)
    faces = split.images[rng.choice(len(split.images), min(FIT_FACES, len(split.images)), replace=False)]
    detector = BlazeFaceDetector(kind="short", max_faces=1)
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
        (rx, ry), (lx, ly) = found[0].keypoints[0], found[0].keypoints[1]
        rolls.append(np.degrees(np.arctan2(ly - ry, lx - rx)))
    if not scales:
        raise StepError(f"BlazeFace found no face on any of {len(faces)} FER+ Training faces: are these "
                        "archives faces, and are edge_fer/models/face_detection_*.tflite intact?")
    offsets = np.array(offsets)
    result = {
        "scale": round(float(np.median(scales)), 3),
        "center_offset": [round(float(np.median(offsets[:, 0])), 3), round(float(np.median(offsets[:, 1])), 3)],
        "fitted_with": {
            "detector": DETECTOR, "split": "FER+ Training", "faces": len(faces), "detected": len(scales),
            "scale_iqr": [round(float(q), 3) for q in np.percentile(scales, [25, 75])],
            "median_abs_roll_deg": round(float(np.median(np.abs(rolls))), 2),
        },
        "command": command,
        **provenance(data_dir),
    }
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    Path(out_file).write_text(json.dumps(result, indent=2) + "\n")
    log(f"crop convention: {json.dumps(result)}")
    return result
