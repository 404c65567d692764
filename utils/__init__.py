"""Hand-detection toolkit: the code behind the top-level scripts, one subpackage per layer.

    common/      paths and defaults (config), atomic file writes, user errors, label maps, box maths
    runtime/     load a model and detect: detector, the tensor contract, frame sources and decoding,
                 the loop (run()), the worker pipeline, outputs and window, the detector CLIs (cli)
    data/        datasets -> images/<split>/ + <split>_labels.csv -> TFRecords
    train/       the trainable SSD, its inputs and the training loop (tf-models-official)
    export/      TF.js model or checkpoint -> frozen graph, SavedModel, TFLite
    evaluation/  COCO metrics of any exported model on labelled images

Imports run one way: train, export and evaluation may use runtime and common; runtime uses only
common. `utils.detector_utils` is the original project's runtime API, kept for its client code.
"""

import os as _os

# Library log noise, silenced once here for every script (each imports utils before any library): TensorFlow's
# C++ INFO/WARNING lines, FFmpeg's own lines inside OpenCV ("moov atom not found"), OpenCV's warnings. Their
# problems reach the scripts as exceptions or failed reads, reported in the project's one-line format. A
# value the user set wins (TF_CPP_MIN_LOG_LEVEL=0 brings TensorFlow's log back).
for _name, _value in (("TF_CPP_MIN_LOG_LEVEL", "2"), ("OPENCV_FFMPEG_LOGLEVEL", "-8"), ("OPENCV_LOG_LEVEL", "ERROR")):
    _os.environ.setdefault(_name, _value)
del _name, _value
