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
from quantize.convert import converted_from
from quantize.data import LABELS, data_hashes, sha256_of
from quantize.model import BASE_WIDTH
from quantize.provenance import read_record

CARD_SCHEMA = 2  # 2: one crop convention per detector


def _record(path: Path, step: str) -> dict:
    record = read_record(path, f"run `python -m quantize {step}` with its output there")
    if not record.get("command"):
        raise ValueError(f"{path} records no command (written before the steps recorded theirs): run "
                         f"`python -m quantize {step}` again")
    return record


def _train_record(train_dir: Path) -> dict:
    return read_record(train_dir / "train.json", f"give --train the folder `python -m quantize train --out` wrote")


def _same_data(record: dict, where: Path, data: dict[str, str], data_dir: str) -> None:
    """A record measured on other archives than --data would put their figures beside --data's hashes."""
    for name, digest in data.items():
        recorded = record.get("inputs", {}).get(name.removesuffix(".npz"), {}).get("sha256")
        if recorded != digest:
            raise ValueError(f"{where} was made from {name} with sha256 {str(recorded)[:12]}…, not from "
                             f"{data_dir}/{name} ({digest[:12]}…): give the same --data, or run that step again")


def write_card(model: Path, card_path: Path, data_dir: str, train_dir: str, eval_dir: str, crop_file: str,
               command: str = "") -> dict:
    """The card of ``model`` at ``card_path``; raises before writing anything when an input is
    missing or belongs to another run. The commands are the ones the steps recorded."""
    interp = load_model(model).interpreter
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    in_scale, in_zero = inp["quantization"]
    if int(out["shape"][-1]) != len(LABELS):
        raise ValueError(f"{model} has {out['shape'][-1]} outputs, expected {len(LABELS)}")
    train = _train_record(Path(train_dir))
    converted = converted_from(model.parent, Path(train_dir) / "model.keras")
    evaluation = _record(Path(eval_dir) / "evaluation.json", "evaluate")
    crop = _record(Path(crop_file), "crop-fit")
    measured = evaluation.get("inputs", {})
    for name, path in (("int8_model", model), ("keras_model", Path(train_dir) / "model.keras")):
        recorded = measured.get(name, {})
        if recorded.get("sha256") != sha256_of(path):
            raise ValueError(f"{eval_dir}/evaluation.json was measured on {recorded.get('path', 'an unrecorded model')}"
                             f", not on {path} as it is now: give --train and --models of the evaluated model, "
                             "or run `python -m quantize evaluate` on this one")
    data = data_hashes(data_dir)
    if not converted.get("command"):
        raise ValueError(f"{model.parent}/convert.json records no command: run `python -m quantize convert` again")
    _same_data(converted, model.parent / "convert.json", data, data_dir)
    _same_data(evaluation, Path(eval_dir) / "evaluation.json", data, data_dir)
    _same_data(crop, Path(crop_file), data, data_dir)
    stages = training_stages(Path(train_dir), data)
    commands = {"convert": converted["command"], "crop_fit": crop["command"], "evaluate": evaluation["command"]}
    if command:
        commands["card"] = command
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
            "how": ("square of side scale*max(box w, box h) centred on the detector box centre moved by "
                    "center_offset * max(w, h) (x right, y down), rotated so the eye keypoints are level when "
                    "align_eyes, area-resized to input_size; one convention per detector kind"),
            "by_detector": crop["by_detector"],
        },
        "data": {name: {"sha256": digest} for name, digest in data.items()},
        "training": {
            "targets": "see commands.train: --fer2013-labels (quantize/train.py, quantize/match.py)",
            "selected_on": "PublicTest (mean of FER2013 and FER+ accuracy)",
            "best_epoch": train["best_epoch"],
            "epochs_run": len(train["history"]),
            "wall_seconds": train["wall_seconds"],
            "wall_seconds_all_stages": round(sum(s["wall_seconds"] for s in stages), 1),
            "seed": train["config"]["seed"],
            "stages": stages,
        },
        "commands": {"train": [s["command"] for s in stages], **commands},
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


def _stage_dirs(train_dir: Path, needed_by: tuple[Path, ...] = ()) -> list[Path]:
    """This run and every run it needed (``--init``, ``--teacher``), each once, earliest first."""
    if train_dir.resolve() in needed_by:
        raise ValueError(f"{train_dir} needs its own output (through --init or --teacher): no command can make it")
    config = _train_record(train_dir)["config"]
    earlier = [Path(config["init"]).parent] if config.get("init") else []
    earlier += [Path(t).parent for t in config.get("teacher", [])]
    stages: list[Path] = []
    for run in earlier:
        stages += [d for d in _stage_dirs(run, (*needed_by, train_dir.resolve())) if d not in stages]
    return stages + [train_dir]


def _stage(train_dir: Path, data: dict[str, str]) -> dict:
    """One training run as the card records it. Refuses a run whose recorded inputs (data files,
    ``--init``, ``--teacher``) are not the files there now: its command would not remake it."""
    record = _train_record(train_dir)
    inputs = record.get("inputs")
    for name, read in (inputs or {}).items():
        now = data.get(Path(read["path"]).name) if name in ("fer2013", "ferplus") else sha256_of(Path(read["path"]))
        if now != read["sha256"]:
            raise ValueError(f"{train_dir} read {name} {read['path']} with sha256 {read['sha256'][:12]}…, but that "
                             f"file is now {str(now)[:12]}…: retrain the run or restore the file")
    return {"command": train_command(record), "epochs_run": len(record["history"]),
            "best_epoch": record["best_epoch"], "wall_seconds": record["wall_seconds"],
            "code_revision": record.get("code_revision", "unknown (not recorded then)"),
            "model_sha256": sha256_of(train_dir / "model.keras"),
            "inputs": inputs or "not recorded (trained before train.json recorded its inputs)"}


def training_stages(train_dir: Path, data: dict[str, str]) -> list[dict]:
    """Every training run the model needs, in the order they must run: each stage's ``--init``
    and ``--teacher`` runs before it. ``data``: the archives' sha256 by file name."""
    return [_stage(d, data) for d in _stage_dirs(train_dir)]


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
    if config.get("augment", "camera") != "camera":
        args += ["--augment", config["augment"]]
    if config.get("base_width", BASE_WIDTH) != BASE_WIDTH:
        args += ["--base-width", str(config["base_width"])]
    if config.get("init"):
        args += ["--init", config["init"]]
    for teacher in config.get("teacher", []):
        args += ["--teacher", teacher]
    return "python -m quantize train " + shlex.join(args)
