"""Where log records go, and with which priority, depending on how edge-fer was started."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_fer.logsetup import PriorityPrefixFormatter, setup_logging, stderr_is_journal, syslog_priority

try:
    from systemd.journal import JournalHandler
except ImportError:
    JournalHandler = None


@pytest.fixture(autouse=True)
def restore_root_logger(monkeypatch):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def no_systemd_python(monkeypatch):
    for name in ("systemd", "systemd.journal"):
        monkeypatch.setitem(sys.modules, name, None)  # the import then raises ImportError


def journal_stream_of_stderr() -> str:
    st = os.fstat(2)
    return f"{st.st_dev}:{st.st_ino}"


def record(level: int, msg: str, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("edge_fer.test", level, __file__, 1, msg, None, exc_info)


def test_terminal_lines_have_time_and_level():
    handler = setup_logging("debug")
    assert logging.getLogger().level == logging.DEBUG
    line = handler.format(record(logging.WARNING, "broker unreachable"))
    assert line.endswith("WARNING edge_fer.test: broker unreachable")
    assert line[:4].isdigit()  # asctime leads


def test_a_second_call_replaces_our_handler_and_keeps_others():
    foreign = logging.NullHandler()
    logging.getLogger().addHandler(foreign)
    first = setup_logging()
    second = setup_logging("WARNING")
    handlers = logging.getLogger().handlers
    assert second in handlers and first not in handlers and foreign in handlers
    assert logging.getLogger().level == logging.WARNING


def test_stderr_connected_to_the_journal_gets_priority_prefixes(monkeypatch, no_systemd_python):
    monkeypatch.setenv("JOURNAL_STREAM", journal_stream_of_stderr())
    assert stderr_is_journal()
    handler = setup_logging()
    assert isinstance(handler.formatter, PriorityPrefixFormatter)
    try:
        raise RuntimeError("camera gone")
    except RuntimeError:
        lines = handler.format(record(logging.ERROR, "capture failed", sys.exc_info())).splitlines()
    assert lines[0] == "<3>edge_fer.test: capture failed"
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)  # traceback keeps priority


def test_the_line_that_ends_a_failed_start_is_an_error_in_the_journal(tmp_path):
    """check-config (the unit's ExecStartPre) on a bad config: `journalctl -p err` must show why."""
    config = tmp_path / "bad.toml"
    config.write_text("[source]\nfps = -1\n")
    err = tmp_path / "stderr"
    with err.open("wb") as out:
        stat = os.fstat(out.fileno())
        env = {k: v for k, v in os.environ.items() if k not in ("INVOCATION_ID", "NOTIFY_SOCKET")}
        env["JOURNAL_STREAM"] = f"{stat.st_dev}:{stat.st_ino}"
        rc = subprocess.run([str(Path(sys.executable).with_name("edge-fer")), "check-config", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=out, env=env, timeout=60).returncode
    lines = err.read_text().splitlines()
    assert rc == 2 and any(line.startswith("<3>config error: source.fps = -1") for line in lines), lines


def test_a_journal_stream_of_another_file_is_not_the_journal(monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "1:1")
    assert not stderr_is_journal()
    assert not isinstance(setup_logging().formatter, PriorityPrefixFormatter)


@pytest.mark.skipif(JournalHandler is None, reason="systemd-python not installed")
def test_under_systemd_records_go_to_journald_with_our_identifier(monkeypatch):
    monkeypatch.setenv("INVOCATION_ID", "0" * 32)
    handler = setup_logging()
    assert isinstance(handler, JournalHandler)
    sent = []
    handler.send = lambda *message, **fields: sent.append((*message, fields))  # its sender hook
    logging.getLogger("edge_fer.test").warning("fps low: %.1f", 3.0)
    [(message, fields)] = sent
    assert message == "edge_fer.test: fps low: 3.0"
    assert fields["PRIORITY"] == "4" and fields["SYSLOG_IDENTIFIER"] == "edge-fer"


@pytest.mark.parametrize("level, priority", [
    (logging.DEBUG, 7), (logging.INFO, 6), (logging.WARNING, 4), (logging.ERROR, 3), (logging.CRITICAL, 2),
    (5, 7), (25, 4), (60, 2),
])
def test_levels_map_to_syslog_priorities(level, priority):
    assert syslog_priority(level) == priority
    if JournalHandler is not None and level <= logging.CRITICAL:
        assert JournalHandler.map_priority(level) == priority
