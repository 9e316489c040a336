"""Shared fixtures. The real-broker MQTT fixtures live in mqtt_broker.py."""
from mqtt_broker import mqtt_broker, mqtt_subscriber  # noqa: F401  (pytest fixtures)
from fixtures_media import astronaut_bgr, face_free_images, make_video  # noqa: F401  (images and videos)
