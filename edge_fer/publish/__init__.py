"""Publishing: only anonymized labels leave the device, over MQTT or as JSON lines on stdout.

Topics under ``<mqtt.prefix>/<mqtt.device_id>/``: ``available`` (retained: online, no_picture,
stopped, or the Last Will offline), ``expression`` (one event per track change, labels mode),
``state`` (retained snapshot, on change and as a heartbeat; labels and presence modes),
``aggregate`` (k-anonymous window counts, aggregate mode) and ``stats`` (periodic health).
Payload fields are described by the JSON Schemas in ``edge_fer/schemas`` and PRIVACY.md.
"""
from __future__ import annotations

from edge_fer.config import Config
from edge_fer.publish._mqtt import MqttSink
from edge_fer.publish._payloads import BLANK_PICTURE_REASON, NO_PICTURE_REASON, Message, Topics
from edge_fer.publish._schemas import SCHEMA_KINDS, load_schema
from edge_fer.publish._sink import MemorySink, Sink, StdoutSink

__all__ = ["Sink", "MqttSink", "StdoutSink", "MemorySink", "Message", "Topics", "build_sink",
           "load_schema", "SCHEMA_KINDS", "NO_PICTURE_REASON", "BLANK_PICTURE_REASON"]


def build_sink(cfg: Config) -> Sink:
    """MQTT when ``mqtt.host`` is set, else JSON lines on stdout. Raises ``PublishError``."""
    return MqttSink(cfg) if cfg.mqtt.host else StdoutSink(cfg)
