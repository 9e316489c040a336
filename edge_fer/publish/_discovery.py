"""Home Assistant MQTT discovery configs, as pure (topic, payload, retain) builders.

One retained config per entity under ``<ha_prefix>/<component>/<device>/<object>/config`` (the
device is Home Assistant's node_id level: joined with ``_``, as edge-fer first did, device ``kitchen``'s
``window_faces`` was device ``kitchen_window``'s ``faces``, and each removed the other's entity).
Which entities exist follows the privacy mode: only what that mode publishes is offered, and the
entities only other modes offer get an empty retained config, which is how Home Assistant
removes an entity: switching to a stricter mode leaves no stale expression sensor behind.
Availability reads our JSON ``available`` topic through a template that maps every status but
"online" ("no_picture", "stopped", "offline") to unavailable, so a blind or stopped device is not
shown as a live sensor.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge_fer import __version__
from edge_fer.publish._payloads import EXPRESSION_OPTIONS, OFFLINE, ONLINE, QOS, Message, Topics

AVAILABILITY_TEMPLATE = "{{ 'online' if value_json.status == 'online' else 'offline' }}"
HA_ONLINE = b"online"
"""Home Assistant's birth message on ``<ha_prefix>/status``: re-send discovery on it."""


@dataclass(frozen=True)
class _Entity:
    component: str
    object_id: str
    name: str
    source: str  # the Topics attribute the entity reads: "state" or "aggregate"
    template: str
    extra: dict[str, Any] = field(default_factory=dict)


_ENUM = {"device_class": "enum", "options": list(EXPRESSION_OPTIONS), "icon": "mdi:emoticon-outline"}
_COUNT = {"state_class": "measurement", "icon": "mdi:account-multiple"}
_EXPRESSION = _Entity("sensor", "expression", "Expression", "state", "{{ value_json.dominant }}", _ENUM)
_FACES = _Entity("sensor", "faces", "Faces", "state", "{{ value_json.faces }}", _COUNT)
_PRESENT = _Entity("binary_sensor", "face_present", "Face present", "state",
                   "{{ 'ON' if value_json.present else 'OFF' }}",
                   {"device_class": "occupancy", "payload_on": "ON", "payload_off": "OFF"})
_WINDOW_EXPRESSION = _Entity("sensor", "window_expression", "Expression (window)", "aggregate",
                             "{{ value_json.dominant }}", _ENUM)
_WINDOW_FACES = _Entity("sensor", "window_faces", "Faces (window)", "aggregate", "{{ value_json.tracks }}", _COUNT)

ENTITIES = {
    "labels": (_EXPRESSION, _FACES, _PRESENT),
    "presence": (_FACES, _PRESENT),
    "aggregate": (_WINDOW_EXPRESSION, _WINDOW_FACES),
}


def status_topic(ha_prefix: str) -> str:
    return f"{ha_prefix}/status"


def _config_topic(ha_prefix: str, device_id: str, entity: _Entity) -> str:
    return f"{ha_prefix}/{entity.component}/{device_id}/{entity.object_id}/config"


def _legacy_config_topic(ha_prefix: str, device_id: str, entity: _Entity) -> str:
    """Where edge-fer first put the config: cleared at a sink's first announcement, so an
    upgraded device leaves no stale entity behind. In a fleet upgraded one device at a time,
    device ``kitchen`` clears two of a not yet upgraded ``kitchen_window``'s (README)."""
    return f"{ha_prefix}/{entity.component}/{device_id}_{entity.object_id}/config"


def unique_id(device_id: str, entity: _Entity) -> str:
    """``:`` is outside the device id alphabet, so no two (device, entity) pairs share one."""
    return f"edge_fer:{device_id}:{entity.object_id}"


def withdrawal(ha_prefix: str, device_id: str) -> list[Message]:
    """Every entity's config emptied: discovery turned off, or the device renamed or moved (the
    old entities would otherwise stay in Home Assistant for good)."""
    every = {e.object_id: e for entities in ENTITIES.values() for e in entities}
    return [Message("discovery_removal", _config_topic(ha_prefix, device_id, e), None, retain=True)
            for e in every.values()]


def discovery(ha_prefix: str, topics: Topics, device_id: str, mode: str,
              expire_after_s: dict[str, int], clear_legacy: bool) -> list[Message]:
    """``expire_after_s``: per source topic ("state", "aggregate"), the seconds its retained
    message lives on the broker; the entity goes unavailable after as long without news, so Home
    Assistant and a consumer arriving later see the same thing (a stuck pipeline, a camera gone,
    a window with fewer than k_min faces: no value)."""
    device = {
        "identifiers": [f"edge_fer_{device_id}"],
        "name": f"edge-fer {device_id}",
        "manufacturer": "edge-fer",
        "model": "edge-fer expression sensor",
        "sw_version": __version__,
    }
    every = {e.object_id: e for entities in ENTITIES.values() for e in entities}
    # First, so that Home Assistant has let go of the old entities when the new unique ids come.
    messages = [Message("discovery_removal", _legacy_config_topic(ha_prefix, device_id, e), None, retain=True)
                for e in every.values()] if clear_legacy else []
    for entity in ENTITIES[mode]:
        payload: dict[str, Any] = {
            "name": entity.name,
            "unique_id": unique_id(device_id, entity),
            "state_topic": getattr(topics, entity.source),
            "value_template": entity.template,
            "availability_topic": topics.available,
            "availability_template": AVAILABILITY_TEMPLATE,
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
            "qos": QOS,
            "device": device,
            "origin": {"name": "edge-fer", "sw_version": __version__},
            **entity.extra,
        }
        payload["expire_after"] = expire_after_s[entity.source]
        messages.append(Message("discovery", _config_topic(ha_prefix, device_id, entity), payload, retain=True))
    offered = {e.object_id for e in ENTITIES[mode]}
    others = {e.object_id: e for entities in ENTITIES.values() for e in entities if e.object_id not in offered}
    messages += [Message("discovery_removal", _config_topic(ha_prefix, device_id, e), None, retain=True)
                 for e in others.values()]
    return messages
