"""How fast labels follow the face, and what that costs in flicker: the tracker's smoothing and
hysteresis ([tracker] settings) on scripted probability streams at a camera's rate.

The streams stand in for the classifier's output (a face that clearly changes expression, one
that leaves, one that shows an expression briefly, one ambiguous between two labels), so the
figures are the tracker's own, repeatable to the frame; the model adds its own errors on top.
Rows: the defaults, a faster setting, and no smoothing at all, which is what a per-frame
classifier (such as the `fer` package's) gives.

    python bench/reaction.py --out bench/results/reaction.json
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from common import RESULTS_DIR, machine, print_table

from edge_fer import LABELS
from edge_fer.track import Tracker, TrackerSettings

FPS = 15.0
"""A Pi camera's usual rate in the daemon (README, bench/soak.py)."""
BOX = (100.0, 100.0, 120.0, 120.0)
CLEAR_P = 0.8
"""The top probability of a clearly shown expression (the rest spread evenly)."""
MAX_EPISODE_FRAMES = 30
AMBIGUOUS_MEAN, AMBIGUOUS_SD = 0.5, 0.1
"""An ambiguous face: its probability of the first of two labels, frame to frame; the second takes the rest
but 0.1 (a face between neutral and sadness, say)."""
AMBIGUOUS_S = 120.0
SETTINGS = {
    "defaults": TrackerSettings(),
    "fast (smoothing_s 0.2, switch_hold_s 0.2)": replace(TrackerSettings(), smoothing_s=0.2, switch_hold_s=0.2),
    "per frame (smoothing_s 0, switch_hold_s 0, switch_margin 0)":
        replace(TrackerSettings(), smoothing_s=0.0, switch_hold_s=0.0, switch_margin=0.0),
}


def clear(label: str) -> np.ndarray:
    probs = np.full(len(LABELS), (1 - CLEAR_P) / (len(LABELS) - 1), np.float32)
    probs[LABELS.index(label)] = CLEAR_P
    return probs


def run(settings: TrackerSettings, script: list[np.ndarray | None]) -> list[tuple[float, object]]:
    """(seconds, event) for each frame of ``script`` (probabilities, or None: no face)."""
    tracker, out = Tracker(LABELS, settings), []
    for i, probs in enumerate(script):
        t = i / FPS
        _, events = tracker.update([] if probs is None else [BOX], [] if probs is None else [probs], t, t)
        out += [(t, e) for e in events]
    return out


def change_delay(settings: TrackerSettings) -> float:
    """Seconds from a clear neutral -> happiness to the ``changed`` event."""
    at = 4.0
    script = [clear("neutral" if i / FPS < at else "happiness") for i in range(int(8 * FPS))]
    return round(next(t for t, e in run(settings, script) if e.kind == "changed") - at, 2)


def gone_delay(settings: TrackerSettings) -> float:
    at = 4.0
    script = [clear("neutral") if i / FPS < at else None for i in range(int(8 * FPS))]
    return round(next(t for t, e in run(settings, script) if e.kind == "gone") - at, 2)


def shortest_episode(settings: TrackerSettings) -> float | None:
    """The shortest surprise, between neutral stretches, that is reported at all (seconds, to the frame)."""
    for count in range(1, MAX_EPISODE_FRAMES + 1):
        frames = ["neutral"] * int(3 * FPS) + ["surprise"] * count + ["neutral"] * int(3 * FPS)
        if any(e.kind == "changed" and e.label == "surprise" for _, e in run(settings, [clear(x) for x in frames])):
            return round(count / FPS, 2)
    return None


def flicker_per_minute(settings: TrackerSettings, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    first, second = LABELS.index("neutral"), LABELS.index("sadness")
    script = []
    for _ in range(int(AMBIGUOUS_S * FPS)):
        p = float(np.clip(rng.normal(AMBIGUOUS_MEAN, AMBIGUOUS_SD), 0, 0.9))
        probs = np.full(len(LABELS), 0.1 / (len(LABELS) - 2), np.float32)
        probs[first], probs[second] = p, 0.9 - p
        script.append(probs)
    changes = sum(e.kind == "changed" for _, e in run(settings, script))
    return round(changes / (AMBIGUOUS_S / 60), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(RESULTS_DIR / "reaction.json"))
    args = parser.parse_args()
    rows = [{"settings": name, "changed after a change (s)": change_delay(s), "gone after leaving (s)": gone_delay(s),
             "shortest expression reported (s)": shortest_episode(s),
             "label changes a minute, ambiguous face": flicker_per_minute(s)} for name, s in SETTINGS.items()]
    print(f"at {FPS:g} fps, every frame classified")
    print_table(rows)
    record = {"fps": FPS, "machine": machine(), "rows": rows,
              "settings": {name: asdict(s) for name, s in SETTINGS.items()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
