"""Which code and which input files made an artefact: every step's JSON records it, and the card
refuses metrics measured on another model file."""
from __future__ import annotations

import subprocess
from pathlib import Path

from quantize.data import sha256_of


def code_revision() -> str:
    """``git describe --always --dirty`` of this checkout ("-dirty": uncommitted changes), or
    "unknown" outside a git checkout (an installed package)."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def provenance(**inputs: str | Path) -> dict:
    """The code revision and each named input file's path and sha256."""
    return {"code_revision": code_revision(),
            "inputs": {name: {"path": str(path), "sha256": sha256_of(Path(path))} for name, path in inputs.items()}}
