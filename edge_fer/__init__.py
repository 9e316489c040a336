"""edge-fer: on-device facial expression recognition that publishes only anonymized labels."""

__version__ = "0.1.0"

LABELS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
"""The 7 expressions, in the shipped model's output order."""
