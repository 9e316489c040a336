"""Convert the trained Keras model to a full-integer int8 TFLite file, then verify it.

Post-training quantization with a representative set drawn from FER+ ``Training`` (stratified
by label, seeded). The input tensor is uint8 with scale 1 and zero point 0, so the device feeds
raw grayscale pixels and does no float preprocessing; the normalisation lives in the graph.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from edge_fer.interpreter import load_model
from quantize.data import LABELS, load_ferplus, sha256_of
from quantize.errors import StepError
from quantize.model import load_keras
from quantize.provenance import provenance, read_record

REPRESENTATIVE_FACES = 700  # 100 per label; more moved no int8 accuracy in PTQ literature
VERIFY_FACES = 500  # PublicTest faces checked for int8/float agreement right after conversion
CONFIDENT_MARGIN = 0.10  # float top-1 leads top-2 by this much: int8 rounding should not flip it
MIN_AGREEMENT = 0.95  # on those faces; below this means calibration went wrong
MAX_MEAN_PROB_DIFF = 0.02
"""Mean |int8 - float| class probability over the checked faces, checked even when no face is
confident (an undertrained model): the shipped model's is 0.0033 (its convert.json)."""


def representative_faces(data_dir: str, seed: int) -> np.ndarray:
    """Stratified by FER+ majority label, from FER+'s sharp copies: FER2013's Training images are
    blurred in the archive (quantize.match), and the camera's crops are not, so their activation
    ranges would calibrate the int8 model for the wrong input."""
    split = load_ferplus(data_dir, "Training")
    rng = np.random.default_rng(seed)
    per_label = REPRESENTATIVE_FACES // len(LABELS)
    pools = [np.flatnonzero(split.labels == k) for k in range(len(LABELS))]
    idx = np.concatenate([rng.choice(pool, min(per_label, len(pool)), replace=False) for pool in pools])
    return split.images[idx]


def to_tflite(model, faces: np.ndarray | None) -> bytes:
    """Float TFLite when ``faces`` is None, else full-integer int8 (uint8 in, int8 out)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if faces is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([f[None, :, :, None].astype(np.float32)] for f in faces)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.int8
    return converter.convert()


def run_tflite(path: Path, images: np.ndarray, backend: str | None = None) -> np.ndarray:
    """Class probabilities for uint8 (n, 48, 48) faces, one invoke per face (as on the device)."""
    interp = load_model(path, num_threads=1, backend=backend).interpreter
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    if tuple(inp["shape"]) != (1, *images.shape[1:], 1) or int(out["shape"][-1]) != len(LABELS):
        raise ValueError(f"{path} takes {tuple(inp['shape'].tolist())} and gives {tuple(out['shape'].tolist())}: not an expression "
                         f"model (1, 48, 48, 1) -> {len(LABELS)} classes; give the .tflite `python -m quantize convert` wrote")
    probs = np.empty((len(images), len(LABELS)), np.float32)
    for i, face in enumerate(images):
        x = face[None, :, :, None]
        if inp["dtype"] == np.float32:
            x = x.astype(np.float32)
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        y = interp.get_tensor(out["index"])[0]
        scale, zero = out["quantization"]
        probs[i] = (y.astype(np.float32) - zero) * scale if scale else y
    return probs


def convert(model_path: str, data_dir: str, out_dir: str, seed: int = 1234, command: str = "", log=print) -> dict:
    """Both files are written under staged names and renamed only once the int8 one is verified:
    a failed run leaves ``out_dir`` as it was, never a float file from one model beside an int8
    file from another."""
    out = Path(out_dir)
    model = load_keras(model_path)
    representative = representative_faces(data_dir, seed)
    faces = load_ferplus(data_dir, "PublicTest").images[:VERIFY_FACES]
    out.mkdir(parents=True, exist_ok=True)
    float_path, int8_path = out / "expression_float.tflite", out / "expression_int8.tflite"
    staged_float, staged_int8 = (p.with_name(".new-" + p.name) for p in (float_path, int8_path))
    try:
        staged_float.write_bytes(to_tflite(model, None))
        staged_int8.write_bytes(to_tflite(model, representative))
        log(f"converted: float {staged_float.stat().st_size} B, int8 {staged_int8.stat().st_size} B")
        report = _verify(model, staged_int8, staged_float, faces, out, seed, command, log)
    except BaseException:
        staged_float.unlink(missing_ok=True)
        staged_int8.unlink(missing_ok=True)
        raise
    os.replace(staged_float, float_path)
    os.replace(staged_int8, int8_path)
    report.update(provenance(data_dir, keras_model=model_path, float_model=float_path, int8_model=int8_path))
    (out / "convert.json").write_text(json.dumps(report, indent=2))
    log(f"wrote {float_path}, {int8_path} and {out / 'convert.json'}")
    return report


def _verify(model, staged_int8: Path, staged_float: Path, faces: np.ndarray, out: Path, seed: int, command: str,
            log) -> dict:
    """The int8 file's input layout, and its outputs against the float model's, before it replaces anything."""
    interp = load_model(staged_int8).interpreter
    inp = interp.get_input_details()[0]
    if inp["dtype"] != np.uint8 or tuple(inp["quantization"]) != (1.0, 0) or tuple(inp["shape"]) != (1, 48, 48, 1):
        raise StepError(f"int8 input is {inp['dtype']} {inp['shape']} q={inp['quantization']}; "
                        "expected uint8 (1,48,48,1) with scale 1, zero point 0")
    reference = model.predict(faces[..., None].astype(np.float32), verbose=0)
    quantized = run_tflite(staged_int8, faces)
    top2 = np.sort(reference, axis=1)[:, -2:]
    confident = top2[:, 1] - top2[:, 0] >= CONFIDENT_MARGIN
    agree = quantized.argmax(axis=1) == reference.argmax(axis=1)
    report = {
        "faces": len(faces),
        "int8_float_top1_agreement": round(float(agree.mean()), 4),
        "confident_faces": int(confident.sum()),
        "confident_agreement": round(float(agree[confident].mean()), 4) if confident.any() else None,
        "mean_abs_prob_diff": round(float(np.abs(quantized - reference).mean()), 5),
        "int8_bytes": staged_int8.stat().st_size, "float_bytes": staged_float.stat().st_size,
        "representative_seed": seed,
        "command": command,
    }
    log(f"verified with the interpreter on {len(faces)} PublicTest faces: {json.dumps(report)}")
    if confident.any() and report["confident_agreement"] < MIN_AGREEMENT:
        raise StepError(f"int8 agrees with float on only {report['confident_agreement']:.1%} of the faces the float "
                        f"model is sure of (< {MIN_AGREEMENT:.0%}): calibration failed; {out} is unchanged")
    if report["mean_abs_prob_diff"] > MAX_MEAN_PROB_DIFF:
        raise StepError(f"int8 probabilities differ from float by {report['mean_abs_prob_diff']} on average "
                        f"(> {MAX_MEAN_PROB_DIFF}): calibration failed; {out} is unchanged")
    return report


def converted_from(models_dir: Path, keras_model: Path) -> dict:
    """``models_dir``'s convert.json, after checking that its .tflite files are the ones converted
    from ``keras_model`` (by sha256): metrics and cards must not pair files of different runs."""
    record_path = models_dir / "convert.json"
    record = read_record(record_path, f"run `python -m quantize convert --model {keras_model} --out {models_dir}` first")
    inputs = record.get("inputs", {})
    for name, path in (("keras_model", keras_model), ("float_model", models_dir / "expression_float.tflite"),
                       ("int8_model", models_dir / "expression_int8.tflite")):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run `python -m quantize convert --out {models_dir}`")
        if inputs.get(name, {}).get("sha256") != sha256_of(path):
            raise ValueError(f"{path} is not the {name.replace('_', ' ')} {record_path} records (converted from "
                             f"{inputs.get('keras_model', {}).get('path', 'an unrecorded model')}): run "
                             f"`python -m quantize convert --model {keras_model} --out {models_dir}` again")
    return record
