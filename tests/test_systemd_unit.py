"""The shipped unit and its installer, checked with systemd's own tools (no running systemd needed)."""
from __future__ import annotations

import ctypes.util
import os
import re
import shutil
import stat
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from edge_fer.install import (HIDDEN_PREFIXES, UNIT_EXEC_PLACEHOLDER, InstallError, check_executable, install_service,
                              packaged)
from edge_fer.service import FIRST_FRAME_TIMEOUT_S
from edge_fer.config import CREDENTIAL_NAME, SOURCE_CREDENTIAL_NAME

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "edge-fer.service"
PROBE = Path(__file__).with_name("sandbox_probe.py")
SKIP_EXIT = 77  # sandbox_probe.py: seccomp not available here
OPT_EXEC = Path("/opt/edge-fer/venv/bin/edge-fer")  # a typical venv install

MAX_EXPOSURE = 1.5
"""Highest acceptable `systemd-analyze security` exposure (0 fully confined .. 10 unconfined)."""

FAST_FAILURE_S = 14.0
"""A start that fails this soon (bad config, missing model) must exhaust the start limit."""

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (apt: systemd)")


def directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment; units repeat keys, so no dict."""
    out, section = [], ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def values(key: str, text: str | None = None) -> list[str]:
    return [v for _, k, v in directives(text or UNIT.read_text()) if k == key]


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(s|min)?", value)
    assert match, f"unsupported time span {value!r}"
    return float(match[1]) * (60 if match[2] == "min" else 1)


@cache
def syscall_group(name: str) -> frozenset[str]:
    """System calls in a systemd group such as @system-service, nested groups expanded."""
    out = subprocess.run([ANALYZE, "syscall-filter", name], capture_output=True, text=True, check=True).stdout
    calls: set[str] = set()
    for line in out.splitlines()[1:]:
        line = line.strip()
        if line and not line.startswith("#"):
            calls |= syscall_group(line) if line.startswith("@") else {line}
    return frozenset(calls)


def unit_syscall_allowlist() -> set[str]:
    """The unit's SystemCallFilter= lines in order: an allow list, then ~ lines removing from it."""
    allowed: set[str] = set()
    for value in values("SystemCallFilter"):
        names = set().union(*(syscall_group(n) if n.startswith("@") else {n} for n in value.lstrip("~").split()))
        allowed = allowed - names if value.startswith("~") else allowed | names
    return allowed


def installed(tmp_path: Path, executable: Path) -> Path:
    root = tmp_path / "root"
    assert install_service(root=root, executable=executable) == 0
    return root


@needs_analyze
def test_installed_unit_passes_systemd_analyze_verify(tmp_path):
    true = shutil.which("true")
    assert true, "needs an executable for ExecStart="
    unit = installed(tmp_path, Path(true)) / "etc/systemd/system/edge-fer.service"
    # Honest: the verified file is the shipped one with only the executable path replaced.
    assert unit.read_text() == UNIT.read_text().replace(UNIT_EXEC_PLACEHOLDER, true)
    result = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=120)
    # verify exits 0 even on unknown keys, so any message about our unit is a failure.
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if "edge-fer" in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


@needs_analyze
def test_exposure_score_is_at_most_the_maximum():
    threshold = round(MAX_EXPOSURE * 10)  # systemd 252 takes tenths: --threshold=25 means 2.5
    result = subprocess.run([ANALYZE, "security", "--offline=yes", f"--threshold={threshold}", str(UNIT)],
                            capture_output=True, text=True, timeout=120)
    match = re.search(r"Overall exposure level for edge-fer\.service: (\d+\.\d)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match[1]) <= MAX_EXPOSURE, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


@needs_analyze
@pytest.mark.skipif(ctypes.util.find_library("seccomp") is None, reason="libseccomp not installed (apt: libseccomp2)")
def test_python_stack_runs_under_the_units_syscall_policy():
    """numpy, OpenCV, TLS, paho and TFLite inference (XNNPACK) need no blocked call and no W+X memory."""
    assert values("SystemCallErrorNumber") == ["EPERM"] and values("MemoryDenyWriteExecute") == ["yes"]
    models = sorted(str(p) for p in (REPO / "edge_fer" / "models").glob("*.tflite"))
    result = subprocess.run([sys.executable, str(PROBE), ",".join(sorted(unit_syscall_allowlist())), *models],
                            capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    if result.returncode == SKIP_EXIT:
        pytest.skip(result.stdout.strip())
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "ok filter active" in lines and "ok numpy cv2 ssl paho tcp" in lines
    assert sum(line.startswith("ok ") and line.endswith(".tflite") for line in lines) >= len(models)


def test_unit_declares_the_service_contract():
    unit = UNIT.read_text()
    expected = {
        "Type": "notify", "NotifyAccess": "main", "Restart": "on-failure",
        "RestartPreventExitStatus": "2", "DynamicUser": "yes", "SupplementaryGroups": "video",
        "ConfigurationDirectory": "edge-fer", "UMask": "0077",
        "DevicePolicy": "closed", "CapabilityBoundingSet": "", "LimitCORE": "0",
        "MemoryDenyWriteExecute": "yes", "NoNewPrivileges": "yes",
        "StandardOutput": "null",  # the no-broker JSON lines (labels) must not be kept by journald
        "StandardError": "journal",  # not inherit: stdout's /dev/null would swallow errors and tracebacks
    }
    for key, value in expected.items():
        assert values(key, unit) == [value], key
    assert values("ExecStartPre", unit) == [f"{UNIT_EXEC_PLACEHOLDER} check-config"]
    assert values("ExecStart", unit) == [f"{UNIT_EXEC_PLACEHOLDER} run"]
    # a bad config fails `systemctl reload` before the daemon is signalled
    assert values("ExecReload", unit) == [f"{UNIT_EXEC_PLACEHOLDER} check-config", "/bin/kill -HUP $MAINPID"]
    assert set(values("DeviceAllow", unit)) == {"char-video4linux rw", "char-media rw", "char-dma_heap rw"}
    assert {"PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1"} <= set(values("Environment", unit)[0].split())
    # the names the config reads under $CREDENTIALS_DIRECTORY
    assert values("LoadCredential", unit) == [f"{CREDENTIAL_NAME}:edge-fer.{CREDENTIAL_NAME}",
                                              f"{SOURCE_CREDENTIAL_NAME}:edge-fer.{SOURCE_CREDENTIAL_NAME}"]


def test_start_limit_stops_fast_failures_but_not_watchdog_restarts():
    interval = seconds(values("StartLimitIntervalSec")[0])
    burst = int(values("StartLimitBurst")[0])
    restart = seconds(values("RestartSec")[0])
    watchdog = seconds(values("WatchdogSec")[0])
    # The limit refuses start burst+1 if it falls inside the interval: burst cycles after the first.
    assert burst * (restart + FAST_FAILURE_S) <= interval
    assert burst * (restart + watchdog) > interval
    assert burst * (restart + FIRST_FRAME_TIMEOUT_S) > interval  # a camera away at start: waited for


def test_the_package_ships_the_unit_and_the_example_config():
    assert packaged("edge-fer.service").read_text() == UNIT.read_text()
    assert packaged("config.example.toml").read_text() == (REPO / "config.example.toml").read_text()


def test_install_into_root_writes_unit_config_and_credstore(tmp_path, capsys):
    root = installed(tmp_path, OPT_EXEC)
    unit = root / "etc/systemd/system/edge-fer.service"
    config = root / "etc/edge-fer/config.toml"
    assert values("ExecStart", unit.read_text()) == [f"{OPT_EXEC} run"]
    assert values("ExecStartPre", unit.read_text()) == [f"{OPT_EXEC} check-config"]
    assert config.read_text() == packaged("config.example.toml").read_text()
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    assert stat.S_IMODE(config.stat().st_mode) == 0o644  # DynamicUser must read it; no secrets in it
    assert stat.S_IMODE((root / "etc/credstore").stat().st_mode) == 0o700
    assert "skipped systemctl daemon-reload" in capsys.readouterr().out


def test_reinstall_replaces_the_unit_but_keeps_an_edited_config(tmp_path, capsys):
    root = installed(tmp_path, OPT_EXEC)
    config = root / "etc/edge-fer/config.toml"
    config.write_text("# edited by the operator\n")
    moved = Path("/usr/local/bin/edge-fer")
    assert install_service(root=root, executable=moved) == 0
    assert config.read_text() == "# edited by the operator\n"
    assert values("ExecStart", (root / "etc/systemd/system/edge-fer.service").read_text()) == [f"{moved} run"]
    assert "kept existing" in capsys.readouterr().out


@pytest.mark.parametrize("executable", ["/home/pi/venv/bin/edge-fer", "/tmp/edge-fer", "venv/bin/edge-fer",
                                        "/opt/my venv/bin/edge-fer"])
def test_install_refuses_an_executable_the_service_cannot_run(tmp_path, executable):
    with pytest.raises(InstallError, match="hidden from the service|absolute path"):
        install_service(root=tmp_path / "root", executable=Path(executable))
    assert not (tmp_path / "root").exists()


def test_install_without_a_console_script_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(InstallError, match="pip install"):
        install_service(root=tmp_path / "root")


def test_the_install_service_command_installs_this_installations_console_script(tmp_path):
    """`edge-fer install-service` as users run it: the unit runs the console script beside this
    interpreter, unless it or the Python behind it lives where the sandbox hides it (a venv under
    /home or /tmp, a pyenv Python under /root)."""
    script = Path(sys.executable).with_name("edge-fer")
    root = tmp_path / "root"
    result = subprocess.run([str(script), "install-service", "--root", str(root)], capture_output=True, text=True,
                            timeout=60)
    behind = [str(script), os.path.realpath(sys.executable), sys.base_prefix + "/"]
    if any(p.startswith(HIDDEN_PREFIXES) for p in behind):
        assert result.returncode == 1 and "is hidden from the service" in result.stderr, result.stderr
        assert not (root / "etc/systemd/system/edge-fer.service").exists()
    else:
        assert result.returncode == 0, result.stderr
        unit = (root / "etc/systemd/system/edge-fer.service").read_text()
        assert values("ExecStart", unit) == [f"{script} run"]


def test_a_venv_whose_python_the_sandbox_hides_is_refused_naming_it(tmp_path):
    """A venv under /opt made from a pyenv Python under /root: its bin/python is a symlink into
    /root, which ProtectHome= hides, so the service would fail with 203/EXEC."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /root/.pyenv/versions/3.11.7/bin\n")
    python = venv / "bin" / "python"
    python.symlink_to("/root/.pyenv/versions/3.11.7/bin/python3.11")
    script = venv / "bin" / "edge-fer"
    script.write_text(f"#!{python}\nimport sys\n")
    check_executable(script, hidden=("/home/",))  # nothing of it under /home
    with pytest.raises(InstallError, match="interpreter's target /root/.pyenv/versions/3.11.7/bin/python3.11 is hidden"):
        check_executable(script, hidden=("/root/",))
