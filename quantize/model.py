"""The expression CNN: a VGG-style stack sized for accuracy per byte and per MAC at 48x48.

Why this shape: four 3x3 double-conv blocks with batch-norm (the VGG variant of Khaireddin &
Chen 2021 is the best single network on FER2013) at a quarter of their width, so the int8
file stays near 1 MB. Channel counts are powers of two: they ran faster per step here.
Global average pooling instead of big dense layers keeps parameters in the convolutions.
"""
from __future__ import annotations

from pathlib import Path

from quantize.data import IMAGE_SHAPE, LABELS

BASE_WIDTH = 32
"""Channels of the first block; doubled each block (32-64-128-256)."""
FIRST_BLOCK_CONVS = 1
"""One conv at full 48x48 resolution: a second cost 21M MACs (18% of the net) and pushed
single-face int8 latency to 0.50 ms on one x86 core with ai-edge-litert, the issue's bar."""
DROPOUT = 0.4


def _block(x, filters: int, name: str, convs: int = 2):
    from keras import layers

    for i in range(1, convs + 1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
        x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.ReLU(name=f"{name}_relu{i}")(x)
    return layers.MaxPooling2D(2, name=f"{name}_pool")(x)


def build_classifier(base_width: int = BASE_WIDTH):
    """Input: raw pixels 0..255, shape (48, 48, 1). Output: softmax over ``LABELS`` (a keras.Model).

    Normalisation lives inside the graph so the int8 model takes raw uint8 pixels. Keras is
    imported here, not at module level, so the CLI can read BASE_WIDTH without TensorFlow.
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=(*IMAGE_SHAPE, 1), name="pixels")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="normalise")(inputs)
    for i, mult in enumerate((1, 2, 4, 8)):
        x = _block(x, base_width * mult, f"block{i + 1}", convs=FIRST_BLOCK_CONVS if i == 0 else 2)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(DROPOUT, name="dropout")(x)
    outputs = layers.Dense(len(LABELS), activation="softmax", name="scores")(x)
    return keras.Model(inputs, outputs, name="edge_fer_expression")


def load_keras(path: str | Path, compile: bool = True):
    """A model ``python -m quantize train`` saved; a clear error for anything else (Keras says
    "File not found" for a file that exists but is not a .keras archive)."""
    import keras

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} not found: give a .keras model that `python -m quantize train` wrote")
    try:
        return keras.saving.load_model(path, compile=compile)
    except Exception as exc:  # Keras raises ValueError, KeyError, OSError... for a foreign file
        raise ValueError(f"{path} is not a Keras model that `python -m quantize train` wrote ({type(exc).__name__}: "
                         f"{exc})") from exc
