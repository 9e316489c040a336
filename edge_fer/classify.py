"""Crop faces the way the model was trained and classify them in one batch.

The classifier must see crops like its training crops: the model card's convention (square,
expanded, eye-levelled) is reproduced here exactly. Raw uint8 pixels go straight into the
int8 model; all normalisation is inside the graph.

A face and its mirror image show the same expression, and the model was trained on both, so
averaging the two views is a free ensemble (the ``both views`` rows of the model card). The
pipeline gets it at no cost by showing the mirrored crop every other time it classifies (its smoothing
averages them); a still photo, with no next frame, runs both.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_fer.detect import DETECTOR_KINDS, Face
from edge_fer.errors import ModelError
from edge_fer.interpreter import load_model
from edge_fer.model_card import CropConvention, ModelCard, load_card

RIGHT_EYE, LEFT_EYE = 0, 1  # BlazeFace keypoint order (subject's right eye first)
ANTIALIAS_FACTOR = 2
"""The rotating warp works at this multiple of the model side, then area-resizes to it: a face
larger than that is first area-shrunk to it (``_shrink_region``), since a shrinking bilinear warp
samples and fine texture aliases; the dataset faces were downscaled with area averaging."""


REGION_REACH = 0.75
"""Half the side of the region a crop can reach, in crop sides: a square rotated by any angle stays
within side/sqrt(2) = 0.707 of its centre."""


@dataclass(frozen=True)
class Expression:
    """Class probabilities of one face, in the card's label order."""

    probabilities: np.ndarray  # float32 (n_labels,)

    def top(self, labels: tuple[str, ...]) -> tuple[str, float]:
        k = int(self.probabilities.argmax())
        return labels[k], float(self.probabilities[k])


def _shrink_region(image: np.ndarray, centre: tuple[float, float], side: float,
                   factor: float) -> tuple[np.ndarray, tuple[float, float], float]:
    """The part of ``image`` any rotation of the crop square can reach, area-resized by ``factor``,
    with the crop's centre and side in its coordinates. Clipped at the frame's edge, so the warp's
    replicated border is the frame's own."""
    reach = side * REGION_REACH
    h, w = image.shape[:2]
    x0, y0 = max(0, int(centre[0] - reach)), max(0, int(centre[1] - reach))
    x1, y1 = min(w, int(math.ceil(centre[0] + reach))), min(h, int(math.ceil(centre[1] + reach)))
    if x1 <= x0 or y1 <= y0:  # the crop lies wholly off the frame: nothing to shrink
        return image, centre, side
    region = cv2.resize(image[y0:y1, x0:x1], None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    sx, sy = region.shape[1] / (x1 - x0), region.shape[0] / (y1 - y0)  # resize rounds the size
    return region, ((centre[0] - x0) * sx, (centre[1] - y0) * sy), side * sx


def crop_face(image_bgr: np.ndarray, face: Face, crop: CropConvention, input_size: tuple[int, int]) -> np.ndarray:
    """The model's input crop (h, w) uint8 grayscale, per the card's crop convention for the
    detector that found ``face``."""
    x, y, w, h = face.box
    side = crop.scale * max(w, h)
    cx = x + w / 2 + crop.center_offset[0] * max(w, h)
    cy = y + h / 2 + crop.center_offset[1] * max(w, h)
    angle = 0.0
    if crop.align_eyes and face.keypoints is not None:
        (rx, ry), (lx, ly) = face.keypoints[RIGHT_EYE], face.keypoints[LEFT_EYE]
        angle = math.degrees(math.atan2(ly - ry, lx - rx))
    out_h, out_w = input_size
    work = max(out_w, min(int(round(side)), out_w * ANTIALIAS_FACTOR))
    if work < round(side):  # a shrinking bilinear warp samples, and fine texture aliases: area-shrink the region first
        image_bgr, (cx, cy), side = _shrink_region(image_bgr, (cx, cy), side, work / side)
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, work / side)
    matrix[:, 2] += (work / 2 - cx, work / 2 - cy)
    warped = cv2.warpAffine(image_bgr, matrix, (work, work), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    gray = cv2.cvtColor(warped, cv2.COLOR_BGR2GRAY) if warped.ndim == 3 else warped
    if work != out_w:
        gray = cv2.resize(gray, (out_w, out_h), interpolation=cv2.INTER_AREA)
    return gray


def _pixel_lut(card: ModelCard, in_scale: float, in_zero: int) -> np.ndarray | None:
    """Pixel -> input byte, when the card's ``pixel * scale + offset`` differs from the tensor's
    own quantization; None when raw pixels already are the input (the shipped model)."""
    pixels = np.arange(256, dtype=np.float64)
    quantized = np.clip(np.round((pixels * card.pixel_scale + card.pixel_offset) / (in_scale or 1.0) + in_zero), 0, 255)
    return None if np.array_equal(quantized, pixels) else quantized.astype(np.uint8)


class ExpressionClassifier:
    """The int8 expression model plus its card; ``classify`` takes all faces of a frame at once.

    ``detector`` names the detector whose boxes it will crop (its convention comes from the card)."""

    def __init__(self, model_path: str | Path, *, detector: str = DETECTOR_KINDS[0], num_threads: int = 1,
                 backend: str | None = None):
        self.card = load_card(model_path)
        self.crop = self.card.crop_for(detector)
        loaded = load_model(model_path, num_threads=num_threads, backend=backend)
        self.backend = loaded.backend
        self._interp = loaded.interpreter
        inp, out = self._interp.get_input_details()[0], self._interp.get_output_details()[0]
        want = (1, *self.card.input_size, self.card.channels)
        if tuple(inp["shape"]) != want or inp["dtype"] != np.uint8:
            raise ModelError(f"{model_path}: input is {inp['dtype'].__name__} {tuple(inp['shape'].tolist())}, "
                             f"its card says uint8 {want}; the model and card do not belong together")
        if out["shape"][-1] != len(self.card.labels):
            raise ModelError(f"{model_path}: {out['shape'][-1]} outputs but {len(self.card.labels)} labels in its card")
        self._lut = _pixel_lut(self.card, *inp["quantization"])
        self._in, self._out = inp["index"], out["index"]
        self._out_scale, self._out_zero = out["quantization"]
        self._batch = 1

    def _resize_batch(self, n: int) -> None:
        if n != self._batch:
            self._interp.resize_tensor_input(self._in, [n, *self.card.input_size, self.card.channels])
            self._interp.allocate_tensors()
            self._batch = n

    def classify_crops(self, crops: np.ndarray) -> list[Expression]:
        """``crops``: uint8 (n, h, w). One invoke for the whole batch."""
        if len(crops) == 0:
            return []
        self._resize_batch(len(crops))
        if self._lut is not None:
            crops = self._lut[crops]
        self._interp.set_tensor(self._in, np.ascontiguousarray(crops[..., None]))
        self._interp.invoke()
        raw = self._interp.get_tensor(self._out)
        probs = (raw.astype(np.float32) - self._out_zero) * self._out_scale if self._out_scale else raw.astype(np.float32)
        return [Expression(p) for p in probs]

    def _crops(self, image_bgr: np.ndarray, faces: list[Face]) -> np.ndarray:
        return np.stack([crop_face(image_bgr, f, self.crop, self.card.input_size) for f in faces])

    def classify(self, image_bgr: np.ndarray, faces: list[Face], *, mirrored: bool = False) -> list[Expression]:
        """One view per face: the crop, or its left-right mirror image."""
        if not faces:
            return []
        crops = self._crops(image_bgr, faces)
        return self.classify_crops(crops[:, :, ::-1] if mirrored else crops)

    def classify_still(self, image_bgr: np.ndarray, faces: list[Face]) -> list[Expression]:
        """Both views averaged: for a photo, where no next frame brings the other view."""
        if not faces:
            return []
        crops = self._crops(image_bgr, faces)
        plain, mirrored = self.classify_crops(crops), self.classify_crops(crops[:, :, ::-1])
        return [Expression((a.probabilities + b.probabilities) / 2) for a, b in zip(plain, mirrored)]
