"""One source for the project's paths and defaults.

Every script and test imports its paths from here, so moving a folder is a one-line change.
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Build outputs (gitignored, made by make targets).
CACHE_DIR = ROOT / ".cache"
# HANDTRACK_MODEL_DIR points everything at another model folder (`make test` uses its own copy of
# the pretrained model, so the tests never overwrite a model you exported).
MODEL_DIR = ROOT / os.environ.get("HANDTRACK_MODEL_DIR", "hand_inference_graph")
DATA_DIR = ROOT / "data"
IMAGES_DIR = ROOT / "images"
CHECKPOINT_DIR = ROOT / "model-checkpoint"
VIDEOS_DIR = ROOT / "videos"
RESULTS_DIR = ROOT / "results"

# Files inside hand_inference_graph/ (one tensor contract for all of them, see README).
FROZEN_GRAPH_NAME = "frozen_inference_graph.pb"
SAVED_MODEL_NAME = "saved_model"
TFLITE_FP32_NAME = "hand_detector.tflite"
TFLITE_INT8_NAME = "hand_detector_int8.tflite"
LABEL_MAP_NAME = "hand_label_map.pbtxt"
MANIFEST_NAME = "manifest.json"

FROZEN_GRAPH_PATH = MODEL_DIR / FROZEN_GRAPH_NAME
SAVED_MODEL_PATH = MODEL_DIR / SAVED_MODEL_NAME
TFLITE_FP32_PATH = MODEL_DIR / TFLITE_FP32_NAME
TFLITE_INT8_PATH = MODEL_DIR / TFLITE_INT8_NAME
LABEL_MAP_PATH = MODEL_DIR / LABEL_MAP_NAME

# The pretrained EgoHands model ships in this npm package (MIT licence).
HANDTRACKJS_PACKAGE = "handtrackjs"
HANDTRACKJS_VERSION = "0.1.5"
HANDTRACKJS_SHA256 = "e79982ff90a15279625080114504768911f624fad9d056adfa869c8d92b62a45"
HANDTRACKJS_MODEL_SUBDIR = "package/models/web/ssdlitemobilenetv2"
HANDTRACKJS_CACHE = CACHE_DIR / "handtrackjs"
HANDTRACKJS_MODEL_DIR = HANDTRACKJS_CACHE / f"{HANDTRACKJS_PACKAGE}-{HANDTRACKJS_VERSION}" / HANDTRACKJS_MODEL_SUBDIR

# The same package's gesture/face model (TF2 OD API SSD MobileNetV2-FPNLite 320, TF.js graph model,
# float32 "base" weights), exported into a folder of its own with the same files and contract.
# HANDTRACK_GESTURE_DIR points everything at another folder (as HANDTRACK_MODEL_DIR does).
GESTURE_MODEL_DIR = ROOT / os.environ.get("HANDTRACK_GESTURE_DIR", "gesture_inference_graph")
GESTURE_TFJS_SUBDIR = "package/models/webmodel/ssd320fpnlite/base"
GESTURE_TFJS_DIR = HANDTRACKJS_CACHE / f"{HANDTRACKJS_PACKAGE}-{HANDTRACKJS_VERSION}" / GESTURE_TFJS_SUBDIR
# sha256 over the model folder's files (utils.export.exporter.folder_fingerprint), checked after extraction.
GESTURE_TFJS_SHA256 = "27e0324eabf6b6b48fe77f61e0cbf4d2fe55d387dfa78cb14fc72e92b089baac"
HANDTRACKJS_INDEX_JS = "package/src/index.js"  # its labelMap gives the gesture model's class order
# The gesture model's classes by role (names from its label map): hand poses, faces, fingertips.
GESTURE_HAND_CLASSES = ("open", "closed", "pinch", "point")
GESTURE_FACE_CLASS = "face"
GESTURE_FINGERTIP_CLASSES = ("pointtip", "pinchtip")

# The tensor contract.
INPUT_TENSOR = "image_tensor"
OUTPUT_TENSORS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")

# SSDLite-MobileNetV2 as trained by the original project.
MODEL_INPUT_SIZE = 300
NUM_ANCHORS = 1917
NMS_IOU_THRESHOLD = 0.6  # the original pipeline.config's value
MAX_DETECTIONS = 100

# int8 calibration: real hand frames, evenly spread over the sources.
CALIBRATION_FRAMES = 100

# The labels CSV of the original project (pixels), and the annotated-video codec.
LABELS_CSV_COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")
# Every labels CSV also names each image's dataset (egohands, oxford, voc, coco or a user's name);
# a CSV from before this column existed reads as LEGACY_SOURCE.
LABELS_CSV_SOURCE_COLUMN = "source"
LEGACY_SOURCE = "egohands"
VIDEO_FOURCC = "mp4v"

# Detector defaults.
DEFAULT_SCORE_THRESHOLD = 0.2
DEFAULT_NUM_HANDS = 2
DEFAULT_WIDTH = 320
DEFAULT_HEIGHT = 240

# Multi-worker training (train.py --strategy multi_worker_mirrored): seconds a worker waits for the
# others listed in TF_CONFIG before giving up with an error.
TRAIN_CLUSTER_TIMEOUT_S = 300

# Real data beside the checkout (absent on a user's fresh clone; tests skip then).
SHARED_DIR = Path(os.environ.get("HANDTRACK_SHARED_DIR", ROOT.parent / "shared"))
SHARED_EGOHANDS_ZIP = SHARED_DIR / "egohands-sample" / "egohands_data.zip"
SHARED_EGOHANDS_LABELS = SHARED_DIR / "egohands-sample" / "labels.csv"
SHARED_HAND_VIDEO = SHARED_DIR / "videos" / "hand_desk.mp4"
SHARED_OXFORD_ARCHIVE = SHARED_DIR / "oxford-hands" / "hand_dataset.tar.gz"
SHARED_OXFORD_LABELS = SHARED_DIR / "oxford-hands" / "labels.csv"
SHARED_WEBCAM_DIR = SHARED_DIR / "webcam-hands"          # Pascal VOC folder of laptop-webcam photos
SHARED_WEBCAM_LABELS = SHARED_WEBCAM_DIR / "labels.csv"
SHARED_WEBCAM_IMAGES = SHARED_WEBCAM_DIR / "images"
SHARED_WEBCAM_SESSIONS = SHARED_WEBCAM_DIR / "sessions.csv"  # filename,session: split by session

# The demo's own sample, shipped in the repository (samples/README.md: source, licence, re-encoding):
# hand_desk.mp4 re-encoded to 480x480 H.264, so that `make demo` and int8 calibration work on a
# fresh clone that has no ../shared.
SAMPLES_DIR = ROOT / "samples"
SAMPLE_HAND_VIDEO = SAMPLES_DIR / "hand_desk_480.mp4"
