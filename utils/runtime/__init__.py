"""Detect hands with an exported model: loading, the tensor contract, frame sources, the worker pipeline.

The runtime imports only utils.common: never training, export or evaluation.
"""
