"""Checks of the bench scripts' arguments, run in main() before any work: one line on what is wrong
and what to do, instead of a traceback minutes into a run."""
from __future__ import annotations

from pathlib import Path

from edge_fer.errors import ModelError
from edge_fer.interpreter import load_model
from edge_fer.model_card import card_path_for, load_card


def check_model(path: str | Path, flag: str = "--model", card: bool = True) -> None:
    """Exit with one line unless ``path`` is a TFLite file the interpreter opens (and, with
    ``card``, has the model card beside it that the daemon needs)."""
    path = Path(path)
    if not path.is_file():
        beside = f" with its card {card_path_for(path).name} beside it" if card else ""
        raise SystemExit(f"{flag} {path}: no such file; pass a .tflite model{beside}")
    try:
        load_model(path)
        if card:
            load_card(path)
    except ModelError as exc:
        raise SystemExit(f"{flag} {path}: " + " ".join(str(exc).split())) from None
