# Hand detection toolkit. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

MODEL_DIR        ?= hand_inference_graph
# `make test` checks the pretrained model in a folder of its own, never overwriting MODEL_DIR.
TEST_MODEL_DIR   := $(CURDIR)/.cache/test_model
# The pretrained TF.js model folder: named in one place, utils/common/config.py (plain python3 reads it).
HANDTRACKJS_DIR  := $(shell $(PYTHON) -c 'from utils.common import config; print(config.HANDTRACKJS_MODEL_DIR)')
HANDTRACKJS_MARKER = $(HANDTRACKJS_DIR)/weights_manifest.json
SHARED           ?= ../shared
VIDEO            ?= $(SHARED)/videos/hand_desk.mp4
DEMO_OUTPUT      ?= results/demo.mp4
EGOHANDS_ZIP     ?=
CALIBRATION      ?=
RUN              ?= egohands
EVAL_SPLIT       ?= eval
TEST_ARGS        ?=
TRAIN_ARGS       ?=

.PHONY: help install model demo data video train export eval bench bench-data test lint clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[1m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "Variables: VIDEO=$(VIDEO) MODEL_DIR=$(MODEL_DIR) EGOHANDS_ZIP=<local zip> CALIBRATION=<frames> RUN=$(RUN) TRAIN_ARGS=<train.py flags> EVAL_SPLIT=$(EVAL_SPLIT)"

install: $(VENV)/.installed ## Create .venv with the pinned runtime and dev dependencies

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt -c constraints.txt
	@# tf-models-official's opencv-python-headless shares the cv2 folder: put the GUI build back on top.
	$(PY) -m pip install -q --no-deps --force-reinstall "$$(grep -E '^opencv-python==' requirements.txt)"
	$(PY) -c "import cv2, re, sys; sys.exit(0 if re.search(r'(QT|GTK\+):\s+YES', cv2.getBuildInformation()) else 'cv2 has no GUI backend: opencv-python-headless shadows opencv-python')"
	touch $@

model: install ## Fetch the pretrained EgoHands model (npm handtrackjs@0.1.5) and export every format to MODEL_DIR
	$(PY) fetch_pretrained.py
	$(PY) export_inference_graph.py --from-tfjs $(HANDTRACKJS_DIR) --output_directory $(MODEL_DIR)$(if \
		$(CALIBRATION), --calibration $(CALIBRATION))

# Targets that only need *a* model: build the pretrained one if MODEL_DIR has none (an exported
# model is kept); those that need the TF.js weights or the records: fetch or build them once.
$(MODEL_DIR)/manifest.json:
	$(MAKE) model MODEL_DIR=$(MODEL_DIR)
$(HANDTRACKJS_MARKER): | $(VENV)/.installed
	$(PY) fetch_pretrained.py
data/hand_label_map.pbtxt:
	$(MAKE) data

demo: install | $(MODEL_DIR)/manifest.json ## Detect hands in VIDEO headless: annotated video in results/demo.mp4, FPS printed
	$(PY) detect_single_threaded.py --source $(VIDEO) --model $(MODEL_DIR) --display 0 --output $(DEMO_OUTPUT) --json results/demo.jsonl

data: install ## EgoHands -> images/<split>/ + <split>_labels.csv -> data/<split>.record (EGOHANDS_ZIP=zip to skip the download)
	$(PY) egohands_dataset_clean.py $(if $(EGOHANDS_ZIP),--zip $(EGOHANDS_ZIP))
	$(PY) generate_tfrecord.py

video: install ## Build videos/chess.mov from the EgoHands CHESS frames (EGOHANDS_ZIP=... for a local zip)
	$(PY) make_chess_video.py $(if $(EGOHANDS_ZIP),--zip $(EGOHANDS_ZIP))

train: install | $(HANDTRACKJS_MARKER) data/hand_label_map.pbtxt ## Fine-tune the hand detector (config in model-checkpoint/, RUN=name)
	$(PY) train.py --run $(RUN) $(TRAIN_ARGS)

export: install | $(HANDTRACKJS_MARKER) ## Export the latest checkpoint of RUN to hand_inference_graph/
	$(PY) export_inference_graph.py --checkpoint model-checkpoint/$(RUN) --output_directory $(MODEL_DIR) \
		$(if $(CALIBRATION),--calibration $(CALIBRATION),$(if $(wildcard images/train),--calibration images/train))

eval: install | $(MODEL_DIR)/manifest.json ## COCO metrics (AP@0.5, AP@[.5:.95], AR@100) + PR curve of the model on EVAL_SPLIT (eval)
	$(PY) evaluate.py --model $(MODEL_DIR) --split $(EVAL_SPLIT)

bench: install | $(MODEL_DIR)/manifest.json ## Benchmark: original way vs our detectors on the real video (table + chart in results/)
	$(PY) bench.py --source $(VIDEO) --model-dir $(MODEL_DIR)

bench-data: install ## Benchmark the data pipeline (images/s) on the shared EgoHands sample
	$(PY) bench_data.py

test: install ## Run the test suite (on its own copy of the pretrained model in .cache/test_model)
	$(MAKE) --no-print-directory model MODEL_DIR=$(TEST_MODEL_DIR)
	HANDTRACK_MODEL_DIR=$(TEST_MODEL_DIR) $(PY) -m pytest tests $(TEST_ARGS)

lint: install ## Lint with ruff
	$(VENV)/bin/ruff check .

clean: ## Remove build outputs (keeps .venv and the download cache)
	rm -rf $(filter-out $(MODEL_DIR)/hand_label_map.pbtxt,$(wildcard $(MODEL_DIR)/*)) \
		data images results *_labels.csv .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
