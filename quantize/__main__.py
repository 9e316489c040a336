"""``python -m quantize STEP``: train, convert, crop-fit, evaluate, card — one subcommand per step.

Typical order (defaults chain the outputs)::

    python -m quantize train --data ../shared/data
    python -m quantize convert --data ../shared/data
    python -m quantize crop-fit --data ../shared/data
    python -m quantize evaluate --data ../shared/data
    python -m quantize card --data ../shared/data
    python -m quantize tradeoff --data ../shared/data   (an analysis: what each bar costs the other)
    python -m quantize robustness --data ../shared/data --model A.keras --model B.keras   (choosing between runs)
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import shutil
import sys
from pathlib import Path

from edge_fer.errors import EdgeFerError
from edge_fer.model_card import PACKAGED_MODEL
from quantize.data import DataError
from quantize.errors import StepError
from quantize.model import BASE_WIDTH
from quantize.train import AUGMENTATIONS

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_DATA = "../shared/data"
TRAIN_DIR = "build/train"
MODEL_DIR = "build/model"
REPORT_DIR = "quantize/reports"
INSTALL_DIR = "edge_fer/models"
TRAIN_EXTRA_MODULES = {"tensorflow", "keras", "matplotlib"}
"""Imported by the steps, not by the daemon: missing when the train extra is not installed."""
SHIPPED_EPOCHS = 44
"""The shipped model's schedule: 44 epochs x ~2 min on 2 idle cores, best on PublicTest at 37."""


def _train(a) -> None:
    from quantize.train import TrainConfig, train

    train(TrainConfig(data=a.data, out=a.out, epochs=a.epochs, batch=a.batch, lr=a.lr, seed=a.seed,
                      time_budget_min=a.time_budget, limit=a.limit, init=a.init, resume=a.resume, overwrite=a.overwrite,
                      teacher=a.teacher or [], fer2013_labels=a.fer2013_labels, base_width=a.base_width,
                      augment=a.augment))


def _command(step: str, *flags: tuple[str, object]) -> str:
    """The command line that repeats a step, recorded in its JSON and copied into the card."""
    return f"python -m quantize {step} " + shlex.join(str(part) for flag in flags for part in flag)


def _convert(a) -> None:
    from quantize.convert import convert

    command = _command("convert", ("--data", a.data), ("--model", a.model), ("--out", a.out), ("--seed", a.seed))
    convert(a.model, a.data, a.out, seed=a.seed, command=command)


def _crop_fit(a) -> None:
    from quantize.cropfit import fit_crop

    fit_crop(a.data, a.out, command=_command("crop-fit", ("--data", a.data), ("--out", a.out)))


def _evaluate(a) -> None:
    from quantize.evaluate import evaluate

    command = _command("evaluate", ("--data", a.data), ("--model", a.model), ("--models", a.models), ("--out", a.out))
    evaluate(a.model, a.models, a.data, a.out, command=command)


def _robustness(a) -> None:
    from quantize.robustness import compare

    compare(a.model, a.data, a.out, command=_command("robustness", ("--data", a.data),
                                                     *(("--model", m) for m in a.model), ("--out", a.out)))


def _tradeoff(a) -> None:
    from quantize.tradeoff import tradeoff

    tradeoff(a.model, a.data, a.out, command=_command("tradeoff", ("--data", a.data), ("--model", a.model),
                                                      ("--out", a.out)))


def _card(a) -> None:
    from quantize.card import write_card

    install = Path(a.install)
    made = not install.exists()
    install.mkdir(parents=True, exist_ok=True)
    # Stage both, then rename: a failed step must never leave the daemon a model its card does not match.
    built = Path(a.models) / "expression_int8.tflite"
    model, card = install / "expression_int8.tflite", install / "expression_int8.json"
    staged_model, staged_card = model.with_name(".new-" + model.name), card.with_name(".new-" + card.name)
    try:
        command = _command("card", ("--data", a.data), ("--train", a.train), ("--models", a.models),
                           ("--reports", a.reports), ("--install", a.install))
        write_card(built, staged_card, a.data, a.train, a.reports, f"{a.reports}/crop.json", command=command)
    except BaseException:
        if made:  # refused: leave no trace, not even an empty --install folder
            install.rmdir()
        raise
    shutil.copyfile(built, staged_model)
    os.replace(staged_model, model)
    os.replace(staged_card, card)
    print(f"installed {model} and its card {card}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m quantize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)

    def step(name: str, run, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.add_argument("--data", default=DEFAULT_DATA, help="folder with fer2013.npz and ferplus.npz (default %(default)s)")
        p.set_defaults(run=run)
        return p

    p = step("train", _train, "train the float Keras model; keeps the epoch best on PublicTest")
    p.add_argument("--out", type=_writable("folder"), default=TRAIN_DIR, help="output folder: model.keras, train.json")
    p.add_argument("--epochs", type=_at_least(1), default=SHIPPED_EPOCHS, help="the shipped model's is the default")
    p.add_argument("--batch", type=_at_least(1), default=128)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (AdamW, warm-up then cosine)")
    p.add_argument("--seed", type=_at_least(0, MAX_SEED), default=1234)
    p.add_argument("--time-budget", type=_minutes, default=0.0,
                   help="minutes; stop before an epoch that would end past it, going by the last epoch's length (0 = none)")
    p.add_argument("--limit", type=_at_least(0), default=0, help="train on only this many faces (smoke runs; 0 = all)")
    p.add_argument("--init", default="", help="start from this .keras model (e.g. a low-rate second stage)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out from its last epoch (same settings; "
                        "--time-budget may change), e.g. a long run split into working sessions")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (without it, or --resume, such a folder is refused)")
    p.add_argument("--teacher", action="append", metavar="MODEL",
                   help="a trained .keras model to distil from (repeat for an ensemble); its averaged "
                        "probabilities make up half of each target")
    p.add_argument("--base-width", type=_at_least(1), default=BASE_WIDTH,
                   help="channels of the first block, doubled per block (the default is the shipped model's; "
                        "a wider net makes a teacher, not a model for the device)")
    p.add_argument("--fer2013-labels", choices=("matched", "as-given", "none", "only"), default="matched",
                   help="matched: FER2013 labels carried to FER+'s sharp copies of the faces (default); "
                        "as-given: FER2013's own (blurred) Training images as a second view; "
                        "none: FER+'s vote distributions alone; "
                        "only: the matched FER2013 labels alone, FER+'s votes unused")
    p.add_argument("--augment", choices=AUGMENTATIONS, default=AUGMENTATIONS[0],
                   help="camera: shift, zoom, rotation, blur, brightness/contrast and mirror (default); "
                        "mirror: the mirror image only, for a short low-rate stage after --init that lets "
                        "the net fit the faces the camera augmentation kept it from")

    p = step("convert", _convert, "convert to float and full-int8 TFLite, verify with the interpreter")
    p.add_argument("--model", default=f"{TRAIN_DIR}/model.keras", help="the trained Keras model")
    p.add_argument("--out", type=_writable("folder"), default=MODEL_DIR,
                   help="folder for expression_{float,int8}.tflite and convert.json")
    p.add_argument("--seed", type=_at_least(0, MAX_SEED), default=1234, help="seed of the representative-set draw")

    p = step("crop-fit", _crop_fit, "measure where each detector's boxes sit on training faces: the crop conventions")
    p.add_argument("--out", type=_writable("file"), default=f"{REPORT_DIR}/crop.json",
                   help="the JSON card reads as <--reports>/crop.json")

    p = step("evaluate", _evaluate, "Keras vs float TFLite vs int8 TFLite on PrivateTest; latency; plots")
    p.add_argument("--model", default=f"{TRAIN_DIR}/model.keras", help="the Keras model the .tflite files came from")
    p.add_argument("--models", default=MODEL_DIR, help="folder with the converted .tflite files and convert.json")
    p.add_argument("--out", type=_writable("folder"), default=REPORT_DIR,
                   help="folder for evaluation.json and confusion_int8.png")

    p = step("card", _card, "install the int8 model and write its model card, from what train, convert, crop-fit "
                            "and evaluate recorded; refuses records of another model or other data")
    p.add_argument("--train", default=TRAIN_DIR, help="the training run (train.json, model.keras)")
    p.add_argument("--models", default=MODEL_DIR, help="convert's output folder")
    p.add_argument("--reports", default=REPORT_DIR, help="folder with evaluation.json and crop.json")
    p.add_argument("--install", type=_writable("folder"), default=INSTALL_DIR,
                   help="where the model and card go; the default replaces the model the daemon ships")
    p = step("tradeoff", _tradeoff, "on PublicTest, what per-class offsets on the int8 model's output trade "
                                    "between the FER2013 and FER+ accuracies")
    p.add_argument("--model", default=os.path.relpath(PACKAGED_MODEL), help="an int8 .tflite model (default: the shipped one)")
    p.add_argument("--out", type=_writable("file"), default=f"{REPORT_DIR}/tradeoff.json",
                   help="the JSON report (the default is the committed one, which the README quotes)")
    p = step("robustness", _robustness, "on PublicTest, Keras models side by side, clean and under camera "
                                        "degradations (blur, dark, contrast, noise, drift, roll); with two, "
                                        "whether the clean gain is more than chance")
    p.add_argument("--model", action="append", required=True, help="a trained .keras model (repeat to compare)")
    p.add_argument("--out", type=_writable("file"), default="build/robustness.json", help="the JSON report")
    return parser


def _at_least(low: int, high: int | None = None):
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"{text} is below {low}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{text} is above {high}")
        return value
    parse.__name__ = "int"  # argparse names the type in its "invalid int value" message
    return parse


def _minutes(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number of minutes (0 or more; 0 = no budget)")
    return value


_minutes.__name__ = "float"
MAX_SEED = 2**32 - 1  # NumPy's and Keras's seed range


def _writable(kind: str):
    """An output path checked before the step runs: a file where a folder goes (or the reverse)
    used to fail only after minutes of work, with a traceback."""
    def parse(text: str) -> str:
        path = Path(text)
        if kind == "folder" and path.exists() and not path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a file; give a folder")
        if kind == "file" and path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a folder; give the path of a file")
        start = path if kind == "folder" else path.parent
        existing = next((p for p in (start, *start.parents) if p.exists()), Path.cwd())
        if not existing.is_dir():
            raise argparse.ArgumentTypeError(f"{existing} is a file, so {text} cannot be made")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise argparse.ArgumentTypeError(f"cannot write in {existing} (permission denied)")
        return text
    parse.__name__ = f"output {kind}"
    return parse


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        args.run(args)
    except (DataError, FileNotFoundError, ValueError, EdgeFerError) as exc:  # bad input: exit 2
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in TRAIN_EXTRA_MODULES:
            raise
        print(f"error: this step needs {exc.name}, from the train extra: pip install -e '.[train]'", file=sys.stderr)
        return 2
    except OSError as exc:  # a file the step reads or writes: permissions, a full disk
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except StepError as exc:  # the step ran and failed its own check
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
