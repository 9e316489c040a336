"""The JSON Schemas (draft 2020-12) of every payload, shipped in ``edge_fer/schemas``."""
from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_KINDS = ("available", "expression", "state", "aggregate", "stats", "discovery", "discovery_removal")
"""One schema per ``Message.kind``; a message's kind names the file it must validate against."""


@cache
def load_schema(kind: str) -> dict[str, Any]:
    if kind not in SCHEMA_KINDS:
        raise ValueError(f"no schema for {kind!r}; known: {', '.join(SCHEMA_KINDS)}")
    return json.loads((resources.files("edge_fer") / "schemas" / f"{kind}.json").read_text(encoding="utf-8"))
