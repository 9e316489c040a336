"""``pip install edge-fer`` on a 64-bit Raspberry Pi resolves to binary wheels only.

A Pi that has to compile numpy or OpenCV takes hours or fails; a missing aarch64 wheel of the
interpreter leaves the daemon with nothing to run the model. pip resolves for the Pi's platform
from here (``--dry-run --platform``): the real index, the real wheels' tags, nothing installed.
One limit: pip evaluates environment markers for this host, not the target. The ones in
pyproject.toml evaluate alike for every case resolved here (``platform_machine`` is x86_64 or
aarch64 either way; ``python_version == '3.11'`` is only resolved for Bookworm, whose Python is
3.11, and from a 3.11 host), so a marker that differs between host and Pi needs a resolver that
takes the target's.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OLDEST_MANYLINUX_GLIBC = 17
"""manylinux2014 = manylinux_2_17: the oldest tag pip accepts on aarch64."""
PI_OS = {
    # Raspberry Pi OS release: (its Python, its glibc minor version); Debian's own package versions.
    "bookworm": ("3.11", 36),
    "trixie": ("3.13", 41),
}
OFFLINE_SIGNS = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable")
RUNTIME = {"ai-edge-litert", "numpy", "opencv-python-headless", "paho-mqtt"}


def resolve(tmp_path: Path, pi_os: str, extras: str = "") -> dict[str, str]:
    """What pip would install on that Pi OS (64-bit): package name -> version."""
    python, glibc = PI_OS[pi_os]
    platforms = [f"--platform=manylinux_2_{minor}_aarch64" for minor in range(OLDEST_MANYLINUX_GLIBC, glibc + 1)]
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed", "--only-binary=:all:",
         f"--python-version={python}", *platforms, "--platform=manylinux2014_aarch64", "--platform=linux_aarch64",
         f"--target={tmp_path / 'target'}", f"--report={report}", f"{REPO}{extras}"],
        capture_output=True, text=True, timeout=600)
    if proc.returncode and any(sign in proc.stderr for sign in OFFLINE_SIGNS):
        pytest.skip("the package index is unreachable: this check resolves against the real one")
    assert proc.returncode == 0, f"pip cannot install edge-fer{extras} on Pi OS {pi_os} from wheels:\n{proc.stderr}"
    return {item["metadata"]["name"].lower(): item["metadata"]["version"]
            for item in json.loads(report.read_text())["install"]}


@pytest.mark.parametrize("pi_os", sorted(PI_OS))
def test_the_daemon_installs_from_wheels_on_a_64_bit_pi(tmp_path, pi_os):
    packages = resolve(tmp_path, pi_os)
    assert RUNTIME <= packages.keys()
    assert not {"tensorflow", "tensorflow-cpu", "keras"} & packages.keys()  # training stays on the workstation


def test_the_bookworm_extra_keeps_numpy_1_for_pi_os_picamera2(tmp_path):
    """Pi OS's picamera2 stack is built against Debian's numpy 1.24; numpy 2 in the venv breaks it."""
    packages = resolve(tmp_path, "bookworm", "[bookworm]")
    assert packages["numpy"].startswith("1.") and RUNTIME <= packages.keys()


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the legacy extra's python_version marker is "
                    "evaluated for this host (see above): it resolves Bookworm's Python 3.11 only from a 3.11 host")
def test_the_legacy_extra_gives_bookworm_tflite_runtime_with_numpy_1(tmp_path):
    packages = resolve(tmp_path, "bookworm", "[legacy]")
    assert packages["tflite-runtime"] == "2.14.0"
    assert packages["numpy"].startswith("1.")
