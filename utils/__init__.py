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
