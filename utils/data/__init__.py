"""Datasets -> images/<split>/ + <split>_labels.csv -> TFRecords (TF Object Detection API keys)."""
