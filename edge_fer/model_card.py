"""The model card: how the daemon must feed the shipped classifier, checked against the file.

The card is written by ``python -m quantize card``. The daemon reads only the fields it needs
(labels, input layout, crop convention) and refuses a model that does not match its card.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from edge_fer import LABELS
from edge_fer.errors import ModelError

PACKAGED_MODEL = Path(__file__).parent / "models" / "expression_int8.tflite"
PER_DETECTOR_CROP_SCHEMA = 2
"""The card schema (quantize.card.CARD_SCHEMA) from which crop conventions are per detector."""


@dataclass(frozen=True)
class CropConvention:
    """How a detector box becomes the model's input crop, as measured on the training faces.

    The crop is a square of side ``scale * max(box w, box h)`` centred on the box centre moved
    by ``center_offset`` (fractions of that box side, +y down), rotated so the eyes are level.
    """

    scale: float
    center_offset: tuple[float, float]
    align_eyes: bool


@dataclass(frozen=True)
class ModelCard:
    path: Path
    labels: tuple[str, ...]
    input_size: tuple[int, int]  # (h, w)
    channels: int
    pixel_scale: float
    pixel_offset: float
    crops: dict[str, CropConvention]  # by detector kind: each detector boxes a face differently
    sha256: str

    def crop_for(self, detector: str) -> CropConvention:
        """The crop convention fitted for ``detector``; a detector the card has none for would feed
        the model crops unlike its training faces, so it is refused."""
        if detector not in self.crops:
            raise ModelError(f"model card {card_path_for(self.path)} has no crop convention for detector {detector!r} "
                             f"(it has {', '.join(sorted(self.crops))}): choose one of those, or fit it with "
                             "`python -m quantize crop-fit` and rewrite the card with `python -m quantize card`")
        return self.crops[detector]


def card_path_for(model_path: Path) -> Path:
    return Path(model_path).with_suffix(".json")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_card(model_path: str | Path) -> ModelCard:
    """Read ``<model>.json`` beside the model and check it names this exact file."""
    model_path = Path(model_path)
    card_file = card_path_for(model_path)
    try:
        raw = json.loads(card_file.read_text())
    except FileNotFoundError:
        raise ModelError(f"model card {card_file} not found: every model needs its card beside it "
                         "(written by `python -m quantize card`)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"model card {card_file} is unreadable ({exc})") from exc
    if isinstance(raw.get("schema"), int) and raw["schema"] < PER_DETECTOR_CROP_SCHEMA:
        raise ModelError(f"model card {card_file} has one crop convention for every detector (an older card): "
                         "run `python -m quantize crop-fit` and `python -m quantize card` to fit one per detector")
    try:
        card = ModelCard(
            path=model_path,
            labels=tuple(raw["labels"]),
            input_size=(int(raw["input_size"][0]), int(raw["input_size"][1])),
            channels=int(raw["channels"]),
            pixel_scale=float(raw["pixel_scale"]),
            pixel_offset=float(raw["pixel_offset"]),
            crops={str(kind): CropConvention(float(c["scale"]), (float(c["center_offset"][0]), float(c["center_offset"][1])),
                                             bool(c["align_eyes"]))
                   for kind, c in raw["crop"]["by_detector"].items()},
            sha256=str(raw["sha256"]),
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelError(f"model card {card_file} lacks or mistypes a field ({exc!r})") from exc
    if set(card.labels) != set(LABELS) or len(card.labels) != len(LABELS):
        raise ModelError(f"model card {card_file} labels {list(card.labels)} are not the 7 expressions {list(LABELS)}")
    # What edge_fer.classify feeds: one grayscale channel, a square crop, a positive crop scale.
    scales = {kind: c.scale for kind, c in card.crops.items()}
    if card.channels != 1 or card.input_size[0] != card.input_size[1] or not scales or min(scales.values()) <= 0:
        raise ModelError(f"model card {card_file}: edge-fer feeds square grayscale crops; the card says channels "
                         f"{card.channels}, input_size {list(card.input_size)}, crop scales {scales}")
    if model_path.is_file() and sha256_file(model_path) != card.sha256:
        raise ModelError(f"{model_path} does not match its card's sha256 (corrupt or replaced file); "
                         "reinstall edge-fer or re-run `python -m quantize card`")
    return card
