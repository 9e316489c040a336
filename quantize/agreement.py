"""Why one model can't simply meet both accuracy bars: FER2013 and FER+ disagree on the same faces.

Both test sets are the same photos. Where FER2013's label and FER+'s majority differ, a single
prediction is right for at most one of them, so the two accuracies trade against each other on
those faces. This module pairs the faces, counts the disagreement, and works out what a model
would need, given where it stands, to meet both bars.
"""
from __future__ import annotations

import numpy as np

from quantize.data import Split
from quantize.match import pair_faces

BARS = {"fer2013": 0.70, "ferplus": 0.85}
"""The shipped model's accuracy bars (issue 2), on PrivateTest."""


def label_agreement(fer: Split, plus: Split, predicted_fer: np.ndarray, predicted_plus: np.ndarray) -> dict:
    """Pair the two test sets' faces and place the model's predictions against both label sets.

    ``predicted_*``: the model's class per face of each split (its own copy of the pixels).
    """
    twins = pair_faces(fer.images, plus.images)  # both sharp: no blur
    paired = twins >= 0
    label_fer = fer.labels[twins[paired]]
    label_plus = plus.labels[paired]
    agree = label_fer == label_plus
    disagree_faces = int((~agree).sum())
    n_fer, n_plus = len(fer.labels), len(plus.labels)

    in_pair_fer = np.zeros(n_fer, bool)
    in_pair_fer[twins[paired]] = True
    hits_fer = predicted_fer == fer.labels
    hits_plus = predicted_plus == plus.labels
    agreed_fer = np.zeros(n_fer, bool)
    agreed_fer[twins[paired][agree]] = True
    agreed_plus = np.zeros(n_plus, bool)
    agreed_plus[np.flatnonzero(paired)[agree]] = True
    # Faces only one set holds (FER+ dropped it, or the pairing was unsure) count for that set alone.
    alone_fer, alone_plus = int((~in_pair_fer).sum()), int((~paired).sum())

    # Upper bound for any classifier: right on every agreed and unpaired face, disagreements split.
    best_plus_at_fer_bar = (int(agree.sum()) + alone_plus + disagree_faces
                            - max(0.0, BARS["fer2013"] * n_fer - agree.sum() - alone_fer)) / n_plus

    # Where this model stands: on disagreed faces, whose label does it give (FER+'s pixels)?
    pick = predicted_plus[paired][~agree]
    gives_fer = float((pick == label_fer[~agree]).mean()) if disagree_faces else 0.0
    gives_plus = float((pick == label_plus[~agree]).mean()) if disagree_faces else 0.0
    # Keeping its hits outside the disagreed faces, the shares of them it would need to give each
    # set's label to meet both bars; needing more than 1 in total is impossible without first
    # getting more of the agreed faces right.
    need_fer = (BARS["fer2013"] * n_fer - hits_fer[~(in_pair_fer & ~agreed_fer)].sum()) / max(1, disagree_faces)
    need_plus = (BARS["ferplus"] * n_plus - hits_plus[~(paired & ~agreed_plus)].sum()) / max(1, disagree_faces)
    # Even splitting the disagreed faces perfectly between the sets, both bars need at least this
    # accuracy on the agreed faces (its unpaired faces counted as they are).
    agreed = int(agree.sum())
    need_agreed = (BARS["fer2013"] * n_fer + BARS["ferplus"] * n_plus - hits_fer[~in_pair_fer].sum()
                   - hits_plus[~paired].sum() - disagree_faces) / (2 * max(1, agreed))
    return {
        "faces_paired": int(paired.sum()),
        "labels_agree": round(float(agree.mean()), 4),
        "faces_labels_disagree": disagree_faces,
        "ceiling_ferplus_if_fer2013_at_bar": round(float(best_plus_at_fer_bar), 4),
        "model_accuracy_where_labels_agree": round(float(hits_plus[agreed_plus].mean()), 4),
        "accuracy_where_labels_agree_needed_for_both_bars": round(float(need_agreed), 4),
        "model_on_disagreed_faces": {"gives_fer2013_label": round(gives_fer, 4), "gives_ferplus_label": round(gives_plus, 4),
                                     "gives_neither": round(1 - gives_fer - gives_plus, 4)},
        "disagreed_share_needed_for_both_bars": {"fer2013": round(float(need_fer), 4), "ferplus": round(float(need_plus), 4),
                                                 "total": round(float(need_fer + need_plus), 4)},
    }
