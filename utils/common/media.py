"""File kinds the project reads and writes: image and video suffixes (the one list of each)."""
from __future__ import annotations

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm")
# Containers OpenCV writes the project's mp4v codec into (WebM takes only VP8/VP9/AV1).
OUTPUT_VIDEO_SUFFIXES = tuple(suffix for suffix in VIDEO_SUFFIXES if suffix != ".webm")
