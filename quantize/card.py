"""Write the model card the daemon reads beside the int8 model.

Everything in it is read back from files the other steps wrote (the model, the evaluation,
the training log, the crop fit), so the card cannot drift from what was measured.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np

from edge_fer.interpreter import load_model
from quantize.data import LABELS, data_hashes, sha256_of
from quantize.model import BASE_WIDTH

CARD_SCHEMA = 1


def write_card(model: Path, card_path: Path, data_dir: str, train_dir: str, eval_dir: str, crop_file: str,
               commands: dict[str, str]) -> dict:
    """The card of ``model`` at ``card_path``; raises before writing anything when an input is missing."""
    interp = load_model(model).interpreter
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    in_scale, in_zero = inp["quantization"]
    if int(out["shape"][-1]) != len(LABELS):
        raise ValueError(f"{model} has {out['shape'][-1]} outputs, expected {len(LABELS)}")
    train = json.loads((Path(train_dir) / "train.json").read_text())
    evaluation = json.loads((Path(eval_dir) / "evaluation.json").read_text())
    measured = evaluation.get("inputs", {}).get("int8_model", {})
    if measured.get("sha256") != sha256_of(model):
        raise ValueError(f"{eval_dir}/evaluation.json was measured on {measured.get('path', 'an unrecorded model')}, "
                         f"not on {model} as it is now: run `python -m quantize evaluate` on it first")
    crop = json.loads(Path(crop_file).read_text())
    acc = evaluation["accuracy"]
    card = {
        "schema": CARD_SCHEMA,
        "file": model.name,
        "sha256": sha256_of(model),
        "bytes": model.stat().st_size,
        "labels": list(LABELS),
        "input_size": [int(inp["shape"][1]), int(inp["shape"][2])],
        "channels": int(inp["shape"][3]),
        "input_dtype": np.dtype(inp["dtype"]).name,
        "output_dtype": np.dtype(out["dtype"]).name,
        # float model input = pixel * scale + offset; with uint8 scale 1 / zero 0 the raw pixel is the input.
        "pixel_scale": float(in_scale) or 1.0,
        "pixel_offset": float(-in_zero * in_scale),
        "pixels": "grayscale (OpenCV BGR2GRAY, BT.601 weights), 0..255, no normalisation on the device",
        "crop": {
            "scale": crop["scale"],
            "center_offset": crop["center_offset"],
            "align_eyes": True,
            "how": ("square of side scale*max(box w, box h) centred on the detector box centre moved by "
                    "center_offset * max(w, h) (x right, y down), rotated so the BlazeFace eye keypoints are "
                    "level, area-resized to input_size"),
            "fitted_with": crop["fitted_with"],
        },
        "data": {name: {"sha256": digest} for name, digest in data_hashes(data_dir).items()},
        "training": {
            "targets": "see commands.train: --fer2013-labels (quantize/train.py, quantize/match.py)",
            "selected_on": "PublicTest (mean of FER2013 and FER+ accuracy)",
            "best_epoch": train["best_epoch"],
            "epochs_run": len(train["history"]),
            "wall_seconds": train["wall_seconds"],
            "wall_seconds_all_stages": _all_stages_seconds(Path(train_dir)),
            "seed": train["config"]["seed"],
        },
        "commands": {"train": train_stages(Path(train_dir)), **commands},
        "code_revisions": {"train": train.get("code_revision", "unknown (not recorded then)"),
                           "evaluate": evaluation["code_revision"]},
        "metrics": {
            "split": evaluation["split"],
            "ferplus_rules": evaluation["ferplus_rules"],
            "accuracy": {variant: {s: r["accuracy"] for s, r in sets.items()} for variant, sets in acc.items()},
            "int8_without_training_duplicates": evaluation["int8_without_training_duplicates"],
            "macro_f1_int8": {s: r["macro_f1"] for s, r in acc["tflite_int8"].items()},
            "ece_int8": {s: r["ece"] for s, r in acc["tflite_int8"].items()},
            "recall_int8": {s: r["recall"] for s, r in acc["tflite_int8"].items()},
            "int8_minus_float_pt": evaluation["int8_minus_float_pt"],
            "label_agreement_int8": evaluation["label_agreement_int8"],
            "latency_ms_1thread": evaluation["latency_ms"],
        },
    }
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return card


def _stage_dirs(train_dir: Path) -> list[Path]:
    """This run and every run it needed (``--init``, ``--teacher``), each once, earliest first."""
    config = json.loads((train_dir / "train.json").read_text())["config"]
    earlier = [Path(config["init"]).parent] if config.get("init") else []
    earlier += [Path(t).parent for t in config.get("teacher", [])]
    stages: list[Path] = []
    for run in earlier:
        stages += [d for d in _stage_dirs(run) if d not in stages]
    return stages + [train_dir]


def _all_stages_seconds(train_dir: Path) -> float:
    return sum(json.loads((d / "train.json").read_text())["wall_seconds"] for d in _stage_dirs(train_dir))


def train_stages(train_dir: Path) -> list[str]:
    """Every training command in the order they must run: each stage's ``--init`` and
    ``--teacher`` runs before it."""
    return [train_command(json.loads((d / "train.json").read_text())) for d in _stage_dirs(train_dir)]


def train_command(record: dict) -> str:
    """The exact command that reproduces a run, rebuilt from its train.json. ``--resume`` is left
    out (a resumed run ends where one uninterrupted run would), and so is a time budget the run
    did not reach (a split run's last budget would stop the reproduction early)."""
    config = record["config"]
    args = ["--data", config["data"], "--out", config["out"], "--epochs", str(config["epochs"]),
            "--batch", str(config["batch"]), "--lr", str(config["lr"]), "--seed", str(config["seed"]),
            # Stage records from before the flag existed used the as-given recipe.
            "--fer2013-labels", config.get("fer2013_labels", "as-given")]
    if len(record["history"]) < config["epochs"]:
        args += ["--time-budget", str(config["time_budget_min"])]
    if config.get("limit"):
        args += ["--limit", str(config["limit"])]
    if config.get("base_width", BASE_WIDTH) != BASE_WIDTH:
        args += ["--base-width", str(config["base_width"])]
    if config.get("init"):
        args += ["--init", config["init"]]
    for teacher in config.get("teacher", []):
        args += ["--teacher", teacher]
    return "python -m quantize train " + shlex.join(args)
