"""One loader for the TFLite interpreter, whichever package provides it.

Order: ``ai-edge-litert`` first (maintained; measured ~12x faster than tflite-runtime 2.14 on
full-int8 graphs, whose XNNPACK delegate does not take them), then ``tflite-runtime`` (what
Raspberry Pi OS Bookworm users have). TensorFlow itself is never imported here.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_fer.errors import ModelError

BACKENDS = {
    "ai-edge-litert": "ai_edge_litert.interpreter",
    "tflite-runtime": "tflite_runtime.interpreter",
}
"""Package name -> module holding ``Interpreter``, in the order they are tried."""


@dataclass
class LoadedModel:
    interpreter: Any
    backend: str  # package name, e.g. "ai-edge-litert"
    path: Path


def available_backends() -> list[str]:
    found = []
    for name, module in BACKENDS.items():
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        found.append(name)
    return found


def _interpreter_class(backend: str | None):
    names = [backend] if backend and backend != "auto" else list(BACKENDS)
    errors = []
    for name in names:
        if name not in BACKENDS:
            raise ModelError(f"unknown interpreter {name!r}; choose auto or one of {', '.join(BACKENDS)}")
        try:
            return name, importlib.import_module(BACKENDS[name]).Interpreter
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise ModelError("no TFLite interpreter importable (" + "; ".join(errors)
                     + "). Install one: pip install ai-edge-litert (or tflite-runtime==2.14.0 with numpy<2)")


def load_model(path: str | Path, num_threads: int = 1, backend: str | None = None) -> LoadedModel:
    """Open a .tflite file and allocate its tensors; clear errors for missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} not found; reinstall edge-fer or point the config at a .tflite file")
    name, cls = _interpreter_class(backend)
    try:
        interpreter = cls(model_path=str(path), num_threads=num_threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"model file {path} is not a valid TFLite model ({exc}); "
                         "replace it with the file shipped in edge_fer/models/") from exc
    return LoadedModel(interpreter, name, path)
