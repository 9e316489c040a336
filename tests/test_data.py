"""The real archives in ../shared/data, when present: splits and label rules as documented."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quantize.data import load_fer2013, load_ferplus

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(not (DATA / "fer2013.npz").is_file(),
                       reason=f"FER2013/FER+ archives not at {DATA} (they are not part of the project)"),
]


SPLIT_SIZES = {"Training": 28709, "PublicTest": 3589, "PrivateTest": 3589}


@pytest.fixture(scope="module")
def fer2013():
    return {split: load_fer2013(DATA, split) for split in SPLIT_SIZES}


def test_fer2013_splits_have_the_documented_sizes(fer2013):
    assert {name: len(split.labels) for name, split in fer2013.items()} == SPLIT_SIZES


def test_fer2013_class_counts_match_the_dataset_readme(fer2013):
    counts = sum(np.bincount(split.labels, minlength=7) for split in fer2013.values())
    assert counts.tolist() == [4953, 547, 5121, 8989, 6077, 4002, 6198]


@pytest.mark.parametrize("rule, kept, dropped, ties", [("plurality", 3517, 56, 173), ("majority", 3122, 451, 0)])
def test_ferplus_private_test_counts_under_each_rule_are_the_documented_ones(rule, kept, dropped, ties):
    """The README's counts; 3,573 PrivateTest faces in all (ferplus.npz's README)."""
    split = load_ferplus(DATA, "PrivateTest", rule)
    assert (len(split.labels), split.dropped, split.ties) == (kept, dropped, ties)
    assert kept + dropped == 3573
    np.testing.assert_allclose(split.targets.sum(axis=1), 1.0, rtol=1e-6)
