"""The shipped int8 model on real faces it never trained on: the committed PrivateTest fixture.

The fixture (tests/data/mini, built by tests/data/make_fixture.py) holds 30 FER+ PrivateTest
faces per label (fewer for disgust, which FER+ rarely votes) and 30 FER2013 PrivateTest faces per
label, balanced, so these accuracies sit below the full-split figures in the model card (the
full splits are dominated by the easy happiness and neutral classes).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_fer.classify import ExpressionClassifier
from edge_fer.model_card import PACKAGED_MODEL
from quantize.data import load_fer2013, load_ferplus

MINI = Path(__file__).parent / "data" / "mini"
# The shipped model measured 0.755 (FER+, 200 faces) and 0.538 (FER2013, 210 faces) on this
# fixture. Floors sit about two standard errors (~7 pt) under: a regression in the model, its
# pixel path or the interpreter falls far below them; retraining noise does not.
MIN_FERPLUS_ACCURACY = 0.68
MIN_FER2013_ACCURACY = 0.47
CHANCE = 1 / 7


@pytest.fixture(scope="module")
def classifier() -> ExpressionClassifier:
    return ExpressionClassifier(PACKAGED_MODEL)


@pytest.mark.parametrize("loader, floor", [(load_ferplus, MIN_FERPLUS_ACCURACY), (load_fer2013, MIN_FER2013_ACCURACY)],
                         ids=["ferplus", "fer2013"])
def test_shipped_model_beats_its_floor_on_real_private_test_faces(classifier, loader, floor):
    split = loader(MINI, "PrivateTest")
    probs = np.stack([e.probabilities for e in classifier.classify_crops(split.images)])
    accuracy = float((probs.argmax(axis=1) == split.labels).mean())
    assert accuracy >= max(floor, 2 * CHANCE), f"{loader.__name__}: {accuracy:.3f} on {len(split.labels)} faces"
