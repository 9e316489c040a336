"""A frame that shows nothing (covered lens, cap, darkness) is told from a scene without a face."""
from __future__ import annotations

import numpy as np
import pytest

from edge_fer.blank import CHECK_INTERVAL_S, BlankWatch, is_blank
from edge_fer.detect.blazeface import BlazeFaceDetector


def noisy(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, image.shape)
    return np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name, make", [
    ("black", lambda: np.zeros((480, 640, 3), np.uint8)),
    ("black under sensor noise", lambda: noisy(np.zeros((480, 640, 3), np.uint8), 8)),
    ("near black under heavy noise", lambda: noisy(np.full((480, 640, 3), 10, np.uint8), 20)),
    ("flat grey under noise", lambda: noisy(np.full((480, 640, 3), 128, np.uint8), 8)),
])
def test_a_covered_or_black_frame_is_blank(name, make):
    assert is_blank(make()), name


@pytest.mark.parametrize("gain", [1.0, 0.3, 0.12])
def test_a_dim_scene_is_not_blank(astronaut_bgr, gain):
    import cv2

    frame = noisy((cv2.resize(astronaut_bgr, (640, 480)) * gain).astype(np.uint8), 6)
    assert not is_blank(frame)
    if gain >= 0.3:  # the threshold sits below scenes whose face is still found
        assert BlazeFaceDetector(kind="short", max_faces=1, score_threshold=0.6).detect(frame)


def test_the_watch_checks_a_few_times_a_second_and_the_frames_between_share_the_verdict(astronaut_bgr):
    black = np.zeros((480, 640, 3), np.uint8)
    watch = BlankWatch()
    assert not watch.blank(astronaut_bgr, 10.0)
    assert not watch.blank(black, 10.0 + CHECK_INTERVAL_S / 2)  # not checked: the last verdict
    assert watch.blank(black, 10.0 + CHECK_INTERVAL_S)
    assert watch.blank(astronaut_bgr, 10.0 + 1.5 * CHECK_INTERVAL_S)
    assert not watch.blank(astronaut_bgr, 10.0 + 2 * CHECK_INTERVAL_S)
