"""Secrets inside config values: a network camera's URL may carry its password, in its user part
(rtsp://user:password@camera/stream) or, on many cheap IP cameras, in its query
(http://camera/videostream.cgi?user=admin&pwd=password). Whoever holds it can watch the faces, so
it never reaches a log line, an error or ``check-config``'s output (all of which systemd keeps in
the journal)."""
from __future__ import annotations

import re

REDACTED = "***"
"""What a secret shows as: config values marked secret, a URL's password."""

SECRET_QUERY_KEY = re.compile(r"pass|pas$|pwd|pw$|token|key|auth|secret|sig|cred", re.IGNORECASE)
"""Query parameter names that carry credentials: ``password``/``pwd`` (Foscam, Hikvision CGI),
``loginpas``, ``token``/``auth``/``key``/``sig`` (signed stream URLs). Hiding a harmless value
costs nothing; showing a password costs the camera."""


def _redact_query(query: str) -> str:
    pairs = []
    for pair in query.split("&"):
        key, eq, value = pair.partition("=")
        pairs.append(f"{key}={REDACTED}" if eq and value and SECRET_QUERY_KEY.search(key) else pair)
    return "&".join(pairs)


def redact_uri(uri: str) -> str:
    """``uri`` with its user part's password and its credential-like query values replaced by
    ``***``; anything that is not a URL (a path, a device) unchanged.

    Parsed by hand, not by ``urllib``: a password holding ``#``, ``?`` or ``/`` makes ``urlsplit``
    see no password at all. The user part is everything up to the *last* ``@``, so such a password
    is still hidden (over-hiding an ``@`` in a query is the safe mistake)."""
    scheme, sep, rest = uri.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return uri
    userinfo, at, after = rest.rpartition("@")
    if at and ":" in userinfo:
        rest = f"{userinfo.partition(':')[0]}:{REDACTED}@{after}"
    head, q, query = rest.partition("?")
    if q:
        query, h, fragment = query.partition("#")
        rest = f"{head}?{_redact_query(query)}{h}{fragment}"
    return f"{scheme}://{rest}"
