"""Keras float vs float TFLite vs int8 TFLite (one view, and both views averaged as the daemon
sees them) on the PrivateTest ground truths, plus latency.

FER+ is scored under two rules (quantize.data.FERPLUS_RULES, stated in the output): ``ferplus``
is the plurality of the 10 votes, on every face with a 7-class top label; ``ferplus_majority`` is
FER+'s own majority rule, which its published accuracies (and the 85% bar) use. The int8 model is
also scored without the test faces that are Training faces too (quantize.duplicates).
"""
from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import numpy as np

from edge_fer.interpreter import available_backends, load_model
from quantize.agreement import BARS, label_agreement
from quantize.convert import converted_from, run_tflite
from quantize.data import FERPLUS_RULES, LABELS, load_fer2013, load_ferplus
from quantize.duplicates import training_duplicates
from quantize.metrics import classification_report
from quantize.model import load_keras
from quantize.provenance import provenance

LATENCY_WARMUP = 50
LATENCY_RUNS = 1000


def single_face_latency_ms(path: Path, backend: str) -> float:
    """Median ms of one invoke on a single face, 1 thread, as the daemon runs it."""
    interp = load_model(path, num_threads=1, backend=backend).interpreter
    inp = interp.get_input_details()[0]
    x = np.random.default_rng(0).integers(0, 256, inp["shape"]).astype(inp["dtype"])
    times = []
    for i in range(LATENCY_WARMUP + LATENCY_RUNS):
        t0 = time.perf_counter()
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        if i >= LATENCY_WARMUP:
            times.append(time.perf_counter() - t0)
    return round(float(np.median(times)) * 1e3, 4)


def plot_confusions(results: dict, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 5.2))
    for ax, (title, report) in zip(np.atleast_1d(axes), results.items()):
        cm = np.array(report["confusion"], dtype=float)
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for (r, c), v in np.ndenumerate(norm):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v > 0.5 else "black")
        ax.set_xticks(range(len(LABELS)), LABELS, rotation=45, ha="right")
        ax.set_yticks(range(len(LABELS)), LABELS)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title}: acc {report['accuracy']:.3f}")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def evaluate(model_path: str, models_dir: str, data_dir: str, out_dir: str, command: str = "", log=print) -> dict:
    models, out = Path(models_dir), Path(out_dir)
    converted_from(models, Path(model_path))  # the three models belong together, before any work
    keras_model = load_keras(model_path)
    out.mkdir(parents=True, exist_ok=True)
    sets = {"fer2013": load_fer2013(data_dir, "PrivateTest"), "ferplus": load_ferplus(data_dir, "PrivateTest"),
            "ferplus_majority": load_ferplus(data_dir, "PrivateTest", "majority")}
    variants = {
        "keras_float": lambda imgs: keras_model.predict(imgs[..., None].astype(np.float32), batch_size=512, verbose=0),
        "tflite_float": lambda imgs: run_tflite(models / "expression_float.tflite", imgs),
        "tflite_int8": lambda imgs: run_tflite(models / "expression_int8.tflite", imgs),
        # What the daemon's smoothing converges to on a still face: it classifies the mirrored
        # crop every other frame (edge_fer.pipeline); `edge-fer classify` averages both views.
        "tflite_int8_both_views": lambda imgs: (run_tflite(models / "expression_int8.tflite", imgs)
                                                + run_tflite(models / "expression_int8.tflite", imgs[:, :, ::-1])) / 2,
    }
    accuracy: dict = {}
    predicted: dict = {}
    for variant, predict in variants.items():
        for set_name, split in sets.items():
            probs = predict(split.images)
            predicted[variant, set_name] = probs.argmax(axis=1)
            report = classification_report(probs, split.labels, LABELS)
            accuracy.setdefault(variant, {})[set_name] = report
            log(f"{variant:12s} {set_name:8s} acc {report['accuracy']:.4f} macro-F1 {report['macro_f1']:.4f} "
                f"ECE {report['ece']:.4f}")
    # A fresh process per measurement: with TensorFlow loaded, tflite-runtime 2.14 fails to read
    # the model (a C++ length_error, measured here), and the daemon never has TensorFlow loaded.
    jobs = [(kind, backend) for kind in ("int8", "float") for backend in available_backends()]
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        times = pool.starmap(single_face_latency_ms, [(models / f"expression_{k}.tflite", b) for k, b in jobs])
    latency = {f"{kind}/{backend}": ms for (kind, backend), ms in zip(jobs, times)}
    for key, ms in latency.items():
        log(f"latency {key:24s} {ms:.3f} ms (1 thread, single face, median of {LATENCY_RUNS})")
    int8 = accuracy["tflite_int8"]
    duplicates = {}
    for set_name, split in sets.items():
        unseen = ~training_duplicates(data_dir, split)
        duplicates[set_name] = {"faces": int(unseen.sum()), "training_duplicates_left_out": int((~unseen).sum()),
                                "accuracy": round(float((predicted["tflite_int8", set_name] == split.labels)[unseen].mean()), 4)}
        log(f"tflite_int8  {set_name:8s} without the {(~unseen).sum()} faces that are also Training faces: "
            f"acc {duplicates[set_name]['accuracy']:.4f}")
    agreement = label_agreement(sets["fer2013"], sets["ferplus"], predicted["tflite_int8", "fer2013"],
                                predicted["tflite_int8", "ferplus"])
    need = agreement["disagreed_share_needed_for_both_bars"]
    log(f"labels: FER2013 and FER+ agree on {agreement['labels_agree']:.3f} of {agreement['faces_paired']} paired faces; "
        f"with FER2013 at its {BARS['fer2013']:.0%} bar, no model can pass {agreement['ceiling_ferplus_if_fer2013_at_bar']:.3f} "
        f"on FER+. int8 model: {agreement['model_accuracy_where_labels_agree']:.3f} right where they agree; "
        f"both bars would need {need['total']:.2f} of the disagreed faces (more than 1 is impossible)")
    result = {
        **provenance(data_dir, keras_model=model_path, int8_model=models / "expression_int8.tflite"),
        "command": command,
        "split": "PrivateTest",
        "ferplus_rules": {name: {"rule": FERPLUS_RULES[rule], "faces": len(sets[name].labels),
                                 "dropped": sets[name].dropped, "ties": sets[name].ties}
                          for name, rule in (("ferplus", "plurality"), ("ferplus_majority", "majority"))},
        "accuracy": accuracy,
        "int8_without_training_duplicates": duplicates,
        "label_agreement_int8": agreement,
        # From hit counts, not from the rounded accuracies: the bar is -0.5 pt.
        "int8_minus_float_pt": {s: round(100 * float(np.mean(predicted["tflite_int8", s] == split.labels)
                                                     - np.mean(predicted["keras_float", s] == split.labels)), 2)
                                for s, split in sets.items()},
        "latency_ms": latency,
        "int8_bytes": (models / "expression_int8.tflite").stat().st_size,
    }
    (out / "evaluation.json").write_text(json.dumps(result, indent=2))
    plot_confusions({f"int8 {s} PrivateTest": int8[s] for s in sets}, out / "confusion_int8.png")
    log(f"wrote {out / 'evaluation.json'} and {out / 'confusion_int8.png'}")
    return result
