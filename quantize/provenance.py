"""Which code and which input files made an artefact: every step's JSON records it, and the card
refuses metrics measured on another model file."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from quantize.data import FER2013_FILE, FERPLUS_FILE, archive_path, sha256_of


def code_revision() -> str:
    """``git describe --always --dirty`` of this checkout ("-dirty": uncommitted changes), or
    "unknown" outside a git checkout (an installed package)."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def provenance(data_dir: str | Path | None = None, **inputs: str | Path) -> dict:
    """The code revision and each named input file's path and sha256; with ``data_dir``, also the
    two archives (as ``fer2013`` and ``ferplus``), which ``card`` compares with its own --data."""
    if data_dir is not None:
        inputs = {"fer2013": archive_path(data_dir, FER2013_FILE), "ferplus": archive_path(data_dir, FERPLUS_FILE),
                  **inputs}
    return {"code_revision": code_revision(),
            "inputs": {name: {"path": str(path), "sha256": sha256_of(Path(path))} for name, path in inputs.items()}}


def read_record(path: Path, remedy: str) -> dict:
    """A step's JSON record; a missing or damaged one is named, with ``remedy`` (the step to run)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {remedy}")
    try:
        record = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is damaged ({exc}): {remedy}") from exc
    if not isinstance(record, dict):
        raise ValueError(f"{path} is not a step's record (a JSON object): {remedy}")
    return record
