"""Tracker scenarios built from seconds and frame rate; assertions derive from the settings."""
from __future__ import annotations

import math
import re

import numpy as np

from edge_fer import LABELS
from edge_fer.messages import UNCERTAIN
from edge_fer.track import CONFIRM_HITS, Tracker, TrackerSettings

FPS = 15.0
DT = 1 / FPS
BOX = (100.0, 100.0, 80.0, 80.0)
OTHER_BOX = (400.0, 120.0, 70.0, 70.0)


def onehot(label: str, p: float = 0.9) -> np.ndarray:
    probs = np.full(len(LABELS), (1 - p) / (len(LABELS) - 1), np.float32)
    probs[LABELS.index(label)] = p
    return probs


def run(tracker, frames, t0=0.0):
    """frames: list of [(box, probs), ...] per frame. Returns per-frame (faces, events)."""
    out = []
    for i, dets in enumerate(frames):
        t = t0 + i * DT
        out.append(tracker.update([b for b, _ in dets], [p for _, p in dets], t, 1_700_000_000 + t))
    return out


def seconds(s: float) -> int:
    return math.ceil(s * FPS)


def test_track_id_is_stable_while_the_face_moves():
    tracker = Tracker(LABELS)
    frames = [[((BOX[0] + 2 * i, BOX[1] + i, BOX[2], BOX[3]), onehot("happiness"))] for i in range(30)]
    ids = {f.track_id for faces, _ in run(tracker, frames) for f in faces}
    assert len(ids) == 1


def test_two_faces_get_two_ids():
    tracker = Tracker(LABELS)
    frames = [[(BOX, onehot("happiness")), (OTHER_BOX, onehot("sadness"))]] * 5
    faces, _ = run(tracker, frames)[-1]
    assert len({f.track_id for f in faces}) == 2


def test_track_ids_are_64_random_bits_not_a_count_or_derived_from_the_face():
    """PRIVACY.md: a random id (`secrets`, 64 bits), not derived from the face. Two trackers shown
    the same faces (a restart, another device) share no id, and across many tracks each of the 16
    hex digits takes several values: a counter, a clock or a hash of the box would fix some of them."""
    boxes = [(100.0 * (i % 8), 100.0 * (i // 8), 80.0, 80.0) for i in range(32)]  # apart: 32 tracks
    frames = [[(box, onehot("neutral")) for box in boxes]] * CONFIRM_HITS
    first, second = ([f.track_id for f in run(Tracker(LABELS), frames)[-1][0]] for _ in range(2))
    assert len(first) == len(second) == len(boxes)
    assert not set(first) & set(second), "two trackers gave the same faces the same ids"
    ids = first + second
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids), ids
    fixed = [k for k in range(16) if len({i[k] for i in ids}) == 1]  # by chance: p < 2**-240
    assert fixed == [], f"hex digits {fixed} are the same in all {len(ids)} ids: not 64 random bits"


def test_a_face_that_leaves_and_returns_gets_a_new_id_and_ids_are_never_reused():
    s = TrackerSettings()
    tracker = Tracker(LABELS, s)
    present = [[(BOX, onehot("neutral"))]] * 10
    away = [[]] * (seconds(s.max_missed_s) + 2)
    results = run(tracker, present + away + present + away + present)
    appeared = [e.track_id for _, events in results for e in events if e.kind == "appeared"]
    gone = [e.track_id for _, events in results for e in events if e.kind == "gone"]
    assert len(appeared) == 3 and len(set(appeared)) == 3
    assert gone == appeared[:2]


def test_a_face_the_detector_misses_for_a_moment_is_still_counted_until_it_is_gone():
    s = TrackerSettings()
    tracker = Tracker(LABELS, s)
    blinking = [[(BOX, onehot("happiness"))] if i % 5 else [] for i in range(1, 30)]  # 1 miss in 5 frames
    results = run(tracker, blinking + [[]] * (seconds(s.max_missed_s) + 2))
    counts = [len(faces) for faces, _ in results]
    confirmed = CONFIRM_HITS - 1
    assert counts[confirmed:len(blinking)] == [1] * (len(blinking) - confirmed)  # no 1, 0, 1, 0 in the state
    gone_at = next(i for i, (_, events) in enumerate(results) if any(e.kind == "gone" for e in events))
    assert counts[gone_at:] == [0] * (len(results) - gone_at) and counts[gone_at - 1] == 1


def test_appeared_only_after_confirmation_so_a_one_frame_false_positive_is_silent():
    s = TrackerSettings()
    tracker = Tracker(LABELS, s)
    results = run(tracker, [[(BOX, onehot("anger"))]] + [[]] * (seconds(s.max_missed_s) + 2))
    assert all(not events and not faces for faces, events in results)
    tracker = Tracker(LABELS, s)
    results = run(tracker, [[(BOX, onehot("anger"))]] * CONFIRM_HITS)
    assert [e.kind for e in results[CONFIRM_HITS - 1][1]] == ["appeared"]
    assert results[CONFIRM_HITS - 1][1][0].label == "anger"


def test_a_single_frame_blip_does_not_change_the_label():
    tracker = Tracker(LABELS)
    frames = [[(BOX, onehot("happiness"))]] * 20 + [[(BOX, onehot("anger", 0.99))]] + [[(BOX, onehot("happiness"))]] * 20
    results = run(tracker, frames)
    assert not [e for _, events in results for e in events if e.kind == "changed"]
    assert all(f.label == "happiness" for faces, _ in results for f in faces)


def test_a_held_change_switches_once_after_the_hold_time():
    s = TrackerSettings()
    tracker = Tracker(LABELS, s)
    before, after = 20, seconds(3.0)
    frames = [[(BOX, onehot("neutral"))]] * before + [[(BOX, onehot("surprise"))]] * after
    results = run(tracker, frames)
    changes = [(i, e) for i, (_, events) in enumerate(results) for e in events if e.kind == "changed"]
    assert len(changes) == 1
    i, event = changes[0]
    assert (event.previous_label, event.label) == ("neutral", "surprise")
    # Not before the hold time has passed since the frame where surprise first led by the margin.
    assert (i - before) * DT >= s.switch_hold_s


def test_flicker_between_two_close_labels_never_switches():
    tracker = Tracker(LABELS)
    a, b = onehot("sadness", 0.95), onehot("neutral", 0.95)
    frames = [[(BOX, onehot("sadness"))]] * 10 + [[(BOX, a if i % 2 else b)] for i in range(60)]
    results = run(tracker, frames)
    assert not [e for _, events in results for e in events if e.kind == "changed"]


def test_low_confidence_is_reported_as_uncertain():
    s = TrackerSettings()
    flat = np.full(len(LABELS), 1 / len(LABELS), np.float32)
    tracker = Tracker(LABELS, s)
    faces, _ = run(tracker, [[(BOX, flat)]] * 10)[-1]
    assert faces[0].label == UNCERTAIN and faces[0].confidence < s.uncertain_below


def _changes_per_minute(settings: TrackerSettings, mean: float) -> float:
    """A face the classifier is unsure about: its top probability is N(mean, 0.08) frame to frame."""
    rng = np.random.default_rng(0)
    frames = [[(BOX, onehot("neutral", float(np.clip(rng.normal(mean, 0.08), 0, 1))))] for _ in range(seconds(120))]
    changes = sum(e.kind == "changed" for _, events in run(Tracker(LABELS, settings), frames) for e in events)
    return changes / 2


def test_a_face_at_the_confidence_floor_does_not_flicker_in_and_out_of_uncertain():
    s = TrackerSettings()
    at_floor = s.uncertain_below + 0.01
    assert _changes_per_minute(TrackerSettings(uncertain_margin=0.0), at_floor) > 10  # the flicker, without the margin
    assert _changes_per_minute(s, at_floor) <= 2


def test_an_uncertain_face_gets_its_label_back_once_clearly_above_the_floor():
    s = TrackerSettings()
    flat = np.full(len(LABELS), 1 / len(LABELS), np.float32)
    clear = s.uncertain_below + s.uncertain_margin + 0.1
    results = run(Tracker(LABELS, s), [[(BOX, flat)]] * seconds(1) + [[(BOX, onehot("fear", clear))]] * seconds(3))
    changes = [e for _, events in results for e in events if e.kind == "changed"]
    assert [(e.previous_label, e.label) for e in changes] == [(UNCERTAIN, "fear")]


def test_clear_ends_every_confirmed_track():
    tracker = Tracker(LABELS)
    run(tracker, [[(BOX, onehot("happiness")), (OTHER_BOX, onehot("fear"))]] * 5)
    events = tracker.clear(wall=1.0)
    assert sorted(e.kind for e in events) == ["gone", "gone"]
    assert tracker.update([], [], 10.0, 10.0) == ([], [])


def test_unclassified_frames_keep_the_tracks_and_leave_the_smoothing_as_it_was():
    """classifier.max_rate_hz: every third frame classified must smooth exactly as a 5 fps camera."""
    every = 3
    labels = ["neutral"] * seconds(1.0) + ["surprise"] * seconds(2.0)
    capped, sparse = Tracker(LABELS), Tracker(LABELS)
    capped_out = run(capped, [[(BOX, onehot(label) if i % every == 0 else None)] for i, label in enumerate(labels)])
    sparse_out = [sparse.update([BOX], [onehot(label)], i * DT, 1_700_000_000 + i * DT)
                  for i, label in enumerate(labels) if i % every == 0]
    def smoothed(outs):  # what the smoothing decides; ids are random, and confirmation counts frames
        return [([(f.label, f.confidence) for f in faces], [(e.kind, e.label, e.confidence, e.timestamp)
                                                             for e in events if e.kind == "changed"])
                for faces, events in outs]

    confirmed = CONFIRM_HITS  # the sparse tracker's first reported frame
    assert smoothed([out for i, out in enumerate(capped_out) if i % every == 0][confirmed - 1:]) == \
        smoothed(sparse_out[confirmed - 1:])
    ids = {f.track_id for faces, _ in capped_out for f in faces}
    assert len(ids) == 1 and all(faces for faces, _ in capped_out[CONFIRM_HITS:])  # present on every frame
    assert [e.label for _, events in capped_out for e in events] == ["neutral", "surprise"]


def test_a_capped_stream_changes_labels_only_when_a_slow_camera_would():
    """max_rate_hz = 1 at 15 fps (a gap longer than switch_hold_s): a one-classification blip must
    not switch the label on the unclassified frames after it, and a held change switches on the
    same classification as on a 1 fps camera."""
    every = seconds(1.0)
    assert every * DT > TrackerSettings().switch_hold_s
    classes = ["happiness"] * 5 + ["anger"] + ["happiness"] * 4 + ["surprise"] * 4
    probs = [onehot(c, 0.99 if c == "anger" else 0.9) for c in classes]
    capped_out = run(Tracker(LABELS), [[(BOX, probs[i // every] if i % every == 0 else None)]
                                       for i in range(len(classes) * every)])
    sparse = Tracker(LABELS)
    sparse_out = [sparse.update([BOX], [p], k * every * DT, 1_700_000_000 + k * every * DT) for k, p in enumerate(probs)]

    def changes(outs):
        return [(e.previous_label, e.label, e.timestamp) for _, events in outs for e in events if e.kind == "changed"]

    assert changes(capped_out) == changes(sparse_out)
    assert [(old, new) for old, new, _ in changes(capped_out)] == [("happiness", "surprise")]


def test_a_face_first_seen_on_an_unclassified_frame_waits_for_its_label():
    tracker = Tracker(LABELS)
    (faces, events), = run(tracker, [[(BOX, None)]])
    assert not faces and not events
    results = run(tracker, [[(BOX, onehot("happiness"))], [(BOX, None)]], t0=DT)
    assert [(e.kind, e.label) for _, events in results for e in events] == [("appeared", "happiness")]
