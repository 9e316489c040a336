"""What the bench scripts share: /proc readings, the machine's description, printing a table.

Standard library only: bench/pipeline_worker.py imports it in the peer's venv, which has no edge_fer.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

KB_PER_MB = 1024  # /proc/PID/status gives kB
RESULTS_DIR = Path("build/bench-results")
"""Default --out folder: a quick run must not overwrite bench/results/, the committed figures
(name bench/results/<script>.json with --out to replace them)."""


def _fields(path: Path) -> dict[str, str]:
    """``key: value`` lines (/proc/PID/status, /proc/cpuinfo), both sides stripped."""
    pairs = (line.split(":", 1) for line in path.read_text().splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def proc_status(pid: int | str = "self") -> dict[str, str]:
    """/proc/PID/status (Linux); OSError when the process is gone."""
    return _fields(Path(f"/proc/{pid}/status"))


def status_mb(status: dict[str, str], field: str) -> float:
    """A memory field of proc_status(), e.g. ``VmRSS`` or ``VmHWM`` (peak), in MB."""
    return int(status[field].split()[0]) / KB_PER_MB


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (/proc/PID/stat); OSError when gone."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def cpu_model() -> str:
    """The CPU's name (x86 "model name") or the board's (Raspberry Pi "Model") from /proc/cpuinfo."""
    try:
        fields = _fields(Path("/proc/cpuinfo"))
    except OSError:
        fields = {}
    return fields.get("model name") or fields.get("Model") or platform.machine()


def machine() -> dict:
    """Where a run ran, and how busy the machine was (load average over 1, 5, 15 min)."""
    return {"host": platform.node(), "machine": platform.machine(), "cpu": cpu_model(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "loadavg": [round(x, 2) for x in os.getloadavg()]}


def print_table(rows: list[dict[str, object]]) -> None:
    """Rows of one dict each (same keys), as an aligned Markdown table, so it can be pasted as is."""
    columns = list(rows[0])
    cells = [[f"{row[c]}" for c in columns] for row in rows]
    widths = [max(3, len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    for line in ([c for c in columns], ["-" * w for w in widths], *cells):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths)) + " |")
