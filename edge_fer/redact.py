"""Secrets inside config values: a network camera's URL may carry its password
(rtsp://user:password@camera/stream). Whoever holds it can watch the faces, so it never reaches a
log line, an error or ``check-config``'s output (all of which systemd keeps in the journal)."""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

REDACTED = "***"
"""What a secret shows as: config values marked secret, a URL's password."""


def redact_uri(uri: str) -> str:
    """``uri`` with the password of its user part replaced by ``***``; anything else unchanged."""
    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:  # not a URL (a path, a device) or a malformed one: nothing to find
        return uri
    if not password:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{REDACTED}@{host}"))
