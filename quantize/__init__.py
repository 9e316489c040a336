"""Offline toolchain: train the expression CNN, convert it to int8 TFLite, evaluate, write the card.

Run as ``python -m quantize <step>``; needs the ``train`` extra (TensorFlow).
"""
