"""The daemon's reload of its camera, in process: a camera (libcamera, V4L2) has one owner at a time."""
from __future__ import annotations

import os
from dataclasses import replace

import pytest

from edge_fer import service
from edge_fer.config import load_config
from edge_fer.errors import SourceError
from edge_fer.service import Daemon


class ExclusiveCamera:
    """Opens like a real camera: a second open while one is open fails as busy."""

    open_now: set[str] = set()

    def __init__(self, cfg):
        uri = cfg.source.uri
        if uri in self.open_now:
            raise SourceError(f"source {uri!r}: device busy")
        if uri == "picamera:9":
            raise SourceError(f"source {uri!r}: no such camera")
        self.uri, self.width = uri, cfg.source.width
        self.open_now.add(uri)

    def close(self) -> None:
        self.open_now.discard(self.uri)


@pytest.fixture
def daemon(monkeypatch):
    ExclusiveCamera.open_now = set()
    monkeypatch.setattr(service, "open_configured_source", ExclusiveCamera)
    cfg = load_config(os.devnull, {"source.uri": "picamera:0"}, {})
    d = Daemon(cfg)
    d.source = ExclusiveCamera(cfg)
    return d


def test_new_settings_for_the_same_camera_are_applied(daemon):
    new = replace(daemon.cfg, source=replace(daemon.cfg.source, width=1280))
    daemon._reopen_source(new)
    assert daemon.source.width == 1280 and ExclusiveCamera.open_now == {"picamera:0"}


def test_a_camera_that_cannot_open_leaves_the_old_one_running(daemon):
    new = replace(daemon.cfg, source=replace(daemon.cfg.source, uri="picamera:9"))
    with pytest.raises(SourceError, match="no such camera"):
        daemon._reopen_source(new)
    assert daemon.source.uri == "picamera:0" and ExclusiveCamera.open_now == {"picamera:0"}
