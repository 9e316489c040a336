"""Logging set-up: the journal under systemd, a readable stderr otherwise.

Under systemd, records go to journald with their priority and SYSLOG_IDENTIFIER=edge-fer, via
systemd-python when importable, else as ``<N>``-prefixed lines on stderr, which journald parses
(sd-daemon(3)). In a terminal, lines carry a timestamp and level name.

Privacy: log labels, counts, timings and errors only; never pixels, boxes, landmarks,
embeddings or anything derived from one face. No handler here filters for that.
"""
from __future__ import annotations

import logging
import os
import sys

SYSLOG_IDENTIFIER = "edge-fer"
HANDLER_NAME = "edge-fer"  # marks the root handler this module owns

SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,  # LOG_CRIT
    logging.ERROR: 3,  # LOG_ERR
    logging.WARNING: 4,  # LOG_WARNING
    logging.INFO: 6,  # LOG_INFO
    logging.DEBUG: 7,  # LOG_DEBUG
}
"""Python level -> syslog(3) priority, the scale journald stores."""

TERMINAL_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(name)s: %(message)s"  # journald adds time, host and identifier


def syslog_priority(levelno: int) -> int:
    """Priority of the first standard level at or above ``levelno``; systemd-python's
    JournalHandler rounds the same way, so both journal paths agree up to CRITICAL."""
    for level in sorted(SYSLOG_PRIORITY):
        if levelno <= level:
            return SYSLOG_PRIORITY[level]
    return SYSLOG_PRIORITY[logging.CRITICAL]


def stderr_is_journal() -> bool:
    """True if fd 2 is the stream systemd connected to journald ($JOURNAL_STREAM, systemd.exec(5))."""
    stream = os.environ.get("JOURNAL_STREAM")
    if not stream:
        return False
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


class PriorityPrefixFormatter(logging.Formatter):
    """Prefixes every line with ``<N>`` so tracebacks keep the record's priority in the journal."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def _journal_handler() -> logging.Handler | None:
    try:
        from systemd.journal import JournalHandler
    except ImportError:
        return None
    return JournalHandler(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER)


def setup_logging(level: int | str = logging.INFO) -> logging.Handler:
    """Route the root logger to the best sink for how we were started; returns its handler.

    Calling it again (reload, tests) replaces the handler it installed before and leaves other
    handlers, such as pytest's log capture, in place.
    """
    journal_stderr = stderr_is_journal()
    under_systemd = journal_stderr or "INVOCATION_ID" in os.environ
    handler = _journal_handler() if under_systemd else None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(PriorityPrefixFormatter(JOURNAL_FORMAT) if journal_stderr
                             else logging.Formatter(TERMINAL_FORMAT))
    else:
        handler.setFormatter(logging.Formatter(JOURNAL_FORMAT))
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    root.setLevel(level.upper() if isinstance(level, str) else level)  # a bad name raises before any change
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    return handler
