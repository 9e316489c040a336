"""MediaPipe BlazeFace on the TFLite interpreter, with MediaPipe's post-processing in NumPy.

The models ship in edge_fer/models/ (provenance in BLAZEFACE.md). Pre- and post-processing follow
MediaPipe's graphs so scores and boxes match what MediaPipe itself reports:

* ``ImageToTensorCalculator`` in ``modules/face_detection/face_detection.pbtxt``: keep the aspect
  ratio (letterbox, zero border), RGB, float range [-1, 1];
* ``SsdAnchorsCalculator`` and ``TensorsToDetectionsCalculator`` options in
  ``face_detection_short_range.pbtxt`` / ``face_detection_full_range.pbtxt``;
* ``NonMaxSuppressionCalculator`` (``WEIGHTED``, ``INTERSECTION_OVER_UNION``) in ``face_detection.pbtxt``.

The formulas are those of ``calculators/tflite/ssd_anchors_calculator.cc``,
``calculators/tensor/tensors_to_detections_calculator.cc`` and
``calculators/util/non_max_suppression_calculator.cc``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_fer.detect.base import Face
from edge_fer.errors import ModelError
from edge_fer.interpreter import load_model

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


@dataclass(frozen=True)
class BlazeFaceSpec:
    """What differs between the two range models (face_detection_{short,full}_range.pbtxt)."""

    file: str
    input_size: int  # input_size_height/width; also x/y/w/h_scale of TensorsToDetections
    strides: tuple[int, ...]  # SsdAnchorsCalculator strides
    interpolated_scale_aspect_ratio: float  # 1.0 (proto default) adds a 2nd anchor per layer
    num_boxes: int  # TensorsToDetections num_boxes
    min_score_thresh: float  # TensorsToDetections min_score_thresh


SPECS = {
    "short": BlazeFaceSpec("face_detection_short_range.tflite", 128, (8, 16, 16, 16), 1.0, 896, 0.5),
    "full": BlazeFaceSpec("face_detection_full_range.tflite", 192, (4,), 0.0, 2304, 0.6),
}

ANCHOR_OFFSET = 0.5  # anchor_offset_x / anchor_offset_y, both graphs
ASPECT_RATIOS = (1.0,)  # aspect_ratios, both graphs; fixed_anchor_size: true makes every anchor 1x1
NUM_COORDS = 16  # num_coords: box (4) + 6 keypoints x 2
KEYPOINT_COORD_OFFSET = 4  # keypoint_coord_offset
NUM_KEYPOINTS = 6  # num_keypoints
SCORE_CLIPPING_THRESH = 100.0  # score_clipping_thresh (logits clipped before the sigmoid)
NMS_IOU = 0.3  # NonMaxSuppressionCalculator min_suppression_threshold
INPUT_RANGE = (-1.0, 1.0)  # ImageToTensorCalculator output_tensor_float_range


def ssd_anchors(input_size: int, strides: tuple[int, ...], interpolated_scale_aspect_ratio: float) -> np.ndarray:
    """Anchor centres (N, 2) as (x, y) in [0, 1], in SsdAnchorsCalculator's order.

    Layers sharing a stride are merged: each cell of that feature map gets one anchor per aspect
    ratio per layer, plus one interpolated anchor per layer when that ratio is > 0. Anchor sizes
    are not returned: with fixed_anchor_size they are all 1.
    """
    blocks = []
    layer = 0
    while layer < len(strides):
        same = layer
        per_cell = 0
        while same < len(strides) and strides[same] == strides[layer]:
            per_cell += len(ASPECT_RATIOS) + (1 if interpolated_scale_aspect_ratio > 0 else 0)
            same += 1
        cells = math.ceil(input_size / strides[layer])
        centres = (np.arange(cells, dtype=np.float32) + ANCHOR_OFFSET) / cells
        ys, xs = np.meshgrid(centres, centres, indexing="ij")  # y outer, x inner
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        blocks.append(np.repeat(grid, per_cell, axis=0))
        layer = same
    return np.concatenate(blocks)


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, input_size: int,
           min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw model outputs -> (boxes (M, 4) xmin,ymin,xmax,ymax; keypoints (M, 6, 2); scores (M,)).

    Coordinates are normalised to the model input. reverse_output_order is true for BlazeFace, so
    each row is x, y, w, h, then (x, y) per keypoint, in input pixels relative to the anchor.
    Boxes with negative size are dropped, as TensorsToDetectionsCalculator does.
    """
    logits = np.clip(raw_scores.reshape(-1).astype(np.float64), -SCORE_CLIPPING_THRESH, SCORE_CLIPPING_THRESH)
    scores = 1.0 / (1.0 + np.exp(-logits))
    keep = np.flatnonzero(scores >= min_score)
    raw = raw_boxes.reshape(-1, NUM_COORDS)[keep].reshape(-1, NUM_COORDS // 2, 2) / input_size
    points = raw + anchors[keep, None, :]  # centre and keypoints are offsets from the anchor
    centre, size = points[:, 0], raw[:, 1]
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    valid = (size >= 0).all(axis=1)
    keypoints = points[:, KEYPOINT_COORD_OFFSET // 2:KEYPOINT_COORD_OFFSET // 2 + NUM_KEYPOINTS]
    return boxes[valid], keypoints[valid], scores[keep][valid].astype(np.float32)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 iou_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's WEIGHTED non-max suppression: BlazeFace's tie resolution.

    Take the best remaining box; every remaining box with IoU > threshold (itself included) joins
    its cluster; the output is the score-weighted mean of the cluster's boxes and keypoints, with
    the best box's score. Output is in descending score order.
    """
    order = np.argsort(-scores, kind="stable")
    out_boxes, out_points, out_scores = [], [], []
    while order.size:
        top = boxes[order[0]]
        rest = boxes[order]
        inter_w = np.clip(np.minimum(rest[:, 2], top[2]) - np.maximum(rest[:, 0], top[0]), 0, None)
        inter_h = np.clip(np.minimum(rest[:, 3], top[3]) - np.maximum(rest[:, 1], top[1]), 0, None)
        inter = inter_w * inter_h
        areas = (rest[:, 2] - rest[:, 0]) * (rest[:, 3] - rest[:, 1])
        union = areas + (top[2] - top[0]) * (top[3] - top[1]) - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        in_cluster = iou > iou_threshold
        in_cluster[0] = True  # the top box is in its own cluster even when its area is zero
        cluster = order[in_cluster]
        weights = scores[cluster].astype(np.float64)
        total = weights.sum()
        out_boxes.append(weights @ boxes[cluster] / total)
        out_points.append(np.tensordot(weights, keypoints[cluster], axes=1) / total)
        out_scores.append(scores[order[0]])
        order = order[~in_cluster]
    if not out_scores:
        return np.zeros((0, 4)), np.zeros((0, NUM_KEYPOINTS, 2)), np.zeros(0, np.float32)
    return np.array(out_boxes), np.array(out_points), np.array(out_scores, np.float32)


class BlazeFaceDetector:
    """Face boxes and 6 keypoints from MediaPipe's short-range (<2 m) or full-range (<5 m) model."""

    def __init__(self, model_path: str | Path | None = None, kind: str = "short", *,
                 score_threshold: float | None = None, min_face_px: float = 0, max_faces: int = 1,
                 nms_iou: float = NMS_IOU, num_threads: int = 1, backend: str | None = None):
        if kind not in SPECS:
            raise ValueError(f"BlazeFace kind {kind!r} unknown; choose one of {', '.join(SPECS)}")
        self.spec = SPECS[kind]
        self.score_threshold = self.spec.min_score_thresh if score_threshold is None else score_threshold
        self.min_face_px = min_face_px
        self.max_faces = max_faces
        self.nms_iou = nms_iou
        loaded = load_model(model_path or MODELS_DIR / self.spec.file, num_threads=num_threads, backend=backend)
        self.backend = loaded.backend
        self._interpreter = loaded.interpreter
        self._input_index, self._boxes_index, self._scores_index = self._check_layout(loaded.path)
        self.anchors = ssd_anchors(self.spec.input_size, self.spec.strides, self.spec.interpolated_scale_aspect_ratio)
        size = self.spec.input_size
        self._input = np.empty((1, size, size, 3), np.float32)

    def _check_layout(self, path: Path) -> tuple[int, int, int]:
        """Find the tensors by shape, refusing a file that is not this BlazeFace variant."""
        size, n = self.spec.input_size, self.spec.num_boxes
        (inp,) = self._interpreter.get_input_details()
        outputs = {tuple(d["shape"]): d["index"] for d in self._interpreter.get_output_details()}
        if tuple(inp["shape"]) != (1, size, size, 3) or inp["dtype"] != np.float32 \
                or set(outputs) != {(1, n, NUM_COORDS), (1, n, 1)}:
            raise ModelError(f"{path} is not BlazeFace {self.spec.file} (expected a float input 1x{size}x{size}x3 "
                             f"and outputs 1x{n}x{NUM_COORDS}, 1x{n}x1); use the file shipped in edge_fer/models/")
        return inp["index"], outputs[(1, n, NUM_COORDS)], outputs[(1, n, 1)]

    def detect(self, image_bgr: np.ndarray) -> list[Face]:
        """Faces in frame pixels, largest first: at most max_faces, none with a side under
        min_face_px. Largest, not best scored: with ``max_faces = 1`` in a car, the driver nearest
        the camera, not a passenger whose face happens to score higher (measured: 0.84 against 0.68)."""
        height, width = image_bgr.shape[:2]
        size = self.spec.input_size
        scale = min(size / width, size / height)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        left, top = (size - new_w) // 2, (size - new_h) // 2
        # Bilinear, as MediaPipe's CPU warp: scores then match MediaPipe's. INTER_AREA scored the
        # same on our test frames and costs 0.3 ms (short) to 0.9 ms (full) more per 640x480 frame.
        small = cv2.cvtColor(cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR),
                             cv2.COLOR_BGR2RGB)
        low, high = INPUT_RANGE
        self._input.fill(low)  # the letterbox's zero border, in the input range
        window = self._input[0, top:top + new_h, left:left + new_w]
        np.multiply(small, np.float32((high - low) / 255), out=window, casting="unsafe")
        window += low
        self._interpreter.set_tensor(self._input_index, self._input)
        self._interpreter.invoke()
        boxes, points, scores = decode(self._interpreter.get_tensor(self._boxes_index),
                                       self._interpreter.get_tensor(self._scores_index),
                                       self.anchors, size, self.score_threshold)
        boxes, points, scores = weighted_nms(boxes, points, scores, self.nms_iou)
        # Undo the letterbox: input pixels -> frame pixels.
        offset = np.array([left, top], np.float64)
        factor = np.array([width / new_w, height / new_h])
        corners = (boxes.reshape(-1, 2, 2) * size - offset) * factor
        points = (points * size - offset) * factor
        faces = []
        for (x0, y0), (x1, y1), kps, score in zip(corners[:, 0], corners[:, 1], points, scores):
            if min(x1 - x0, y1 - y0) < self.min_face_px:
                continue
            faces.append(Face((float(x0), float(y0), float(x1 - x0), float(y1 - y0)), float(score),
                              kps.astype(np.float32)))
        faces.sort(key=lambda face: face.box[2] * face.box[3], reverse=True)
        return faces[:self.max_faces]
