"""Install the systemd unit and a default config: ``sudo /opt/edge-fer/venv/bin/edge-fer install-service``.

Writes, below ``root`` (``/`` unless staging or testing):

- ``/etc/systemd/system/edge-fer.service``: the packaged unit with its executable path set to
  this installation's ``edge-fer`` console script (always replaced);
- ``/etc/edge-fer/config.toml``: a copy of config.example.toml, only if absent, never overwritten;
- ``/etc/credstore/`` (0700): where the optional MQTT password goes, as ``edge-fer.mqtt_password``.

No user is created: the unit runs as a ``DynamicUser=`` with the ``video`` group, which must
exist. Then ``systemctl daemon-reload`` when installing into the running system. Enabling the
service is left to the operator, after editing the config.
"""
from __future__ import annotations

import grp
import os
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

from edge_fer.errors import EdgeFerError

UNIT_NAME = "edge-fer.service"
UNIT_EXEC_PLACEHOLDER = "/usr/local/bin/edge-fer"
"""The executable path written in systemd/edge-fer.service, replaced at install."""

CAMERA_GROUP = "video"
"""Owner group of /dev/video*, /dev/media* and /dev/dma_heap/* on Raspberry Pi OS and Debian."""

HIDDEN_PREFIXES = ("/home/", "/root/", "/run/user/", "/tmp/", "/var/tmp/")
"""Invisible to the service: ProtectHome= and PrivateTmp= in the unit."""

SAFE_PATH = re.compile(r"/[A-Za-z0-9/._+-]+")
"""Paths that need no quoting in an ExecStart= line."""

UNIT_DIR = "etc/systemd/system"
CONFIG_DIR = "etc/edge-fer"
CREDSTORE_DIR = "etc/credstore"


class InstallError(EdgeFerError):
    """The service cannot be installed as asked."""


def packaged(name: str) -> Path:
    """A file shipped in edge_fer/data (links to systemd/ and the repo root in a checkout)."""
    path = Path(str(resources.files("edge_fer") / "data" / name))
    if not path.is_file():
        raise InstallError(f"{name} is missing from the edge_fer package; reinstall edge-fer")
    return path


def default_executable() -> Path:
    """This installation's console script: beside the interpreter (a venv), else on PATH."""
    found = shutil.which("edge-fer", path=str(Path(sys.executable).parent)) or shutil.which("edge-fer")
    if not found:
        raise InstallError("no edge-fer console script found; `pip install` edge-fer, then run its "
                           "bin/edge-fer install-service")
    return Path(os.path.abspath(found))


def runtime_paths(executable: Path) -> list[tuple[str, str]]:
    """Every file the service's ExecStart= needs, as (what, path): the console script, where its
    symlinks lead, the interpreter its ``#!`` line names and where that leads, and the base Python
    a venv was made from (``home`` in pyvenv.cfg). A pyenv or /home Python behind a venv under
    /opt is as hidden from the service as the venv itself would be."""
    found = [("console script", str(executable))]

    def add(what: str, path: str) -> None:
        if path and path not in (p for _, p in found):
            found.append((what, path))

    if executable.is_file():
        add("console script target", os.path.realpath(executable))
        with open(executable, "rb") as f:
            first = f.readline(512).decode(errors="replace")
        if first.startswith("#!") and first[2:].split():
            interpreter = first[2:].split()[0]
            add("its interpreter", interpreter)
            add("its interpreter's target", os.path.realpath(interpreter))
            venv_cfg = Path(interpreter).parent.parent / "pyvenv.cfg"
            if venv_cfg.is_file():
                for line in venv_cfg.read_text(errors="replace").splitlines():
                    key, _, value = line.partition("=")
                    if key.strip() == "home":
                        add("its venv's base Python", value.strip())
    return found


def check_executable(executable: Path, hidden: tuple[str, ...] = HIDDEN_PREFIXES) -> None:
    text = str(executable)
    if not SAFE_PATH.fullmatch(text):
        raise InstallError(f"executable must be an absolute path of letters, digits and /._+-: {text!r}")
    for what, path in runtime_paths(executable):
        if (path.rstrip("/") + "/").startswith(hidden):
            raise InstallError(f"{text}: {what} {path} is hidden from the service (ProtectHome=, PrivateTmp=); "
                               "install edge-fer in a venv under /opt or /usr/local made from a system Python "
                               "(e.g. /usr/bin/python3 -m venv /opt/edge-fer/venv)")


def systemd_running() -> bool:
    """sd_booted(3): /run/systemd/system exists only when systemd is PID 1."""
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def install_service(root: Path = Path("/"), config_source: Path | None = None,
                    executable: Path | None = None) -> int:
    """Install below ``root``; returns the exit code (0). Raises InstallError with the fix."""
    executable = executable or default_executable()
    check_executable(executable)
    live = Path(root).resolve() == Path("/")
    if live:
        if os.geteuid() != 0:
            raise InstallError("run as root (sudo), or pass --root DIR to stage the files")
        if not os.access(executable, os.X_OK):
            raise InstallError(f"{executable} is not executable")
        try:
            grp.getgrnam(CAMERA_GROUP)
        except KeyError:
            raise InstallError(f"group {CAMERA_GROUP!r} is missing; the camera device nodes must "
                               "belong to it") from None

    unit = Path(root, UNIT_DIR, UNIT_NAME)
    unit.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    staged = unit.with_name(UNIT_NAME + ".tmp")
    staged.write_text(packaged(UNIT_NAME).read_text().replace(UNIT_EXEC_PLACEHOLDER, str(executable)))
    staged.chmod(0o644)
    staged.replace(unit)
    print(f"installed {unit} (ExecStart={executable} run)")

    config = Path(root, CONFIG_DIR, "config.toml")
    config.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    try:
        with config.open("x") as out:  # exclusive create: an operator's config is never replaced
            out.write((config_source or packaged("config.example.toml")).read_text())
        config.chmod(0o644)  # read by the dynamic user; holds no secret
        print(f"installed {config}")
    except FileExistsError:
        print(f"kept existing {config}")

    credstore = Path(root, CREDSTORE_DIR)
    if not credstore.exists():
        credstore.mkdir(mode=0o700, parents=True)
        credstore.chmod(0o700)

    if live and systemd_running():
        if subprocess.run(["systemctl", "daemon-reload"]).returncode != 0:
            raise InstallError("systemctl daemon-reload failed; the files are in place, run it again")
        print(f"next: edit {config}; a camera URL with a password goes in {credstore}/edge-fer.source_uri "
              f"and the MQTT password in {credstore}/edge-fer.mqtt_password (mode 0600, both optional); "
              "then: systemctl enable --now edge-fer")
    else:
        print("skipped systemctl daemon-reload (not the running system)")
    return 0
