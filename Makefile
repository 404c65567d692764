# Hand detection toolkit. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

MODEL_DIR        ?= hand_inference_graph
# The hand model `make model` builds: shipped weights model-checkpoint/shipped/$(MODEL)/ (README "Models"; the
# default, allview, finds hands from every viewpoint), or MODEL=handtrackjs: the original EgoHands model of the npm package.
MODEL            ?= allview
SHIPPED_DIR       = model-checkpoint/shipped/$(MODEL)
SHIPPED_HINT      = MODEL is handtrackjs or a folder of model-checkpoint/shipped/ ($(or $(notdir $(wildcard model-checkpoint/shipped/*)),none yet))
# `make test` checks the pretrained model in a folder of its own, never overwriting MODEL_DIR.
TEST_MODEL_DIR   := $(CURDIR)/.cache/test_model
# The pretrained TF.js model folder: named in one place, utils/common/config.py (plain python3 reads it).
HANDTRACKJS_DIR  := $(shell $(PYTHON) -c 'from utils.common import config; print(config.HANDTRACKJS_MODEL_DIR)')
HANDTRACKJS_MARKER = $(HANDTRACKJS_DIR)/weights_manifest.json
# The same package's 7-class gesture/face model, exported beside the hand model (README "Gesture model").
GESTURE_DIR      ?= gesture_inference_graph
GESTURE_TFJS_DIR := $(shell $(PYTHON) -c 'from utils.common import config; print(config.GESTURE_TFJS_DIR)')
TEST_GESTURE_DIR := $(CURDIR)/.cache/test_gesture_model
# `make test` also checks the figures of the first shipped model, when there is one (tests/test_default_model.py).
SHIPPED_FIRST     = $(firstword $(patsubst model-checkpoint/shipped/%/weights.npz,%,$(wildcard model-checkpoint/shipped/*/weights.npz)))
TEST_DEFAULT_DIR := $(CURDIR)/.cache/test_default_model
SHARED           ?= ../shared
VIDEO            ?= $(SHARED)/videos/hand_desk.mp4
# `make demo`'s video: VIDEO when given; else the shared one when present; else none (then demo.py
# shows camera 0 in a window, or, with no display or camera, runs on the shipped samples/ video).
DEMO_VIDEO        = $(if $(filter file,$(origin VIDEO)),$(wildcard $(VIDEO)),$(VIDEO))
DEMO_OUTPUT      ?= results/demo.mp4
DEMO_PICTURE     ?= results/demo.png
EGOHANDS_ZIP     ?=
OXFORD_ARCHIVE   ?=
# `make data` sources: egohands, oxford, voc:DIR, coco:JSON (NAME= in front names one); DATA_ARGS: flags
DATASETS         ?= egohands
DATA_ARGS        ?=
CALIBRATION      ?=
RUN              ?= egohands
EVAL_SPLIT       ?= test eval
TEST_ARGS        ?=
# `make batch`: the videos (a folder, a quoted glob or a list file), where the JSON lines and summary go, flags
INPUT            ?=
OUTPUT           ?= out
BATCH_ARGS       ?=
TRAIN_ARGS       ?=
# The page's npm packages (web/package-lock.json: LiteRT.js, playwright-core), served from web/node_modules.
WEB_NPM_STAMP    := web/node_modules/.package-lock.json
WEB_PORT         ?= 8000

.PHONY: help install model demo docs data data-allview video train export eval batch bench bench-gesture bench-data test lint clean web serve-web

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[1m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "Variables: VIDEO=$(VIDEO) MODEL=$(MODEL) MODEL_DIR=$(MODEL_DIR) GESTURE_DIR=$(GESTURE_DIR) EGOHANDS_ZIP=<local zip> CALIBRATION=<frames> RUN=$(RUN) TRAIN_ARGS=<train.py flags> EVAL_SPLIT=$(EVAL_SPLIT)"
	@echo "           DATASETS=\"$(DATASETS)\" (egohands oxford voc:DIR coco:JSON) OXFORD_ARCHIVE=<local hand_dataset.tar.gz> DATA_ARGS=<flags for the data script>"

install: $(VENV)/.installed ## Create .venv with the pinned runtime and dev dependencies

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt -c constraints.txt
	@# tf-models-official's opencv-python-headless shares the cv2 folder: put the GUI build back on top.
	$(PY) -m pip install -q --no-deps --force-reinstall "$$(grep -E '^opencv-python==' requirements.txt)"
	$(PY) -c "import cv2, re, sys; sys.exit(0 if re.search(r'(QT|GTK\+):\s+YES', cv2.getBuildInformation()) else 'cv2 has no GUI backend: opencv-python-headless shadows opencv-python')"
	touch $@

model: install ## Build the hand model MODEL (shipped weights, or handtrackjs) -> MODEL_DIR, the gesture model (npm handtrackjs@0.1.5) -> GESTURE_DIR
	$(PY) scripts/fetch_pretrained.py
ifeq ($(MODEL),handtrackjs)
	$(PY) export_inference_graph.py --from-tfjs $(HANDTRACKJS_DIR) --output_directory $(MODEL_DIR)$(if \
		$(CALIBRATION), --calibration $(CALIBRATION))
else
	@test -f $(SHIPPED_DIR)/weights.npz || { echo "make model: $(SHIPPED_DIR)/weights.npz not found; $(SHIPPED_HINT)" >&2; exit 2; }
	$(PY) export_inference_graph.py --checkpoint $(SHIPPED_DIR) --output_directory $(MODEL_DIR)$(if \
		$(CALIBRATION), --calibration $(CALIBRATION))
endif
	$(PY) export_inference_graph.py --from-tfjs $(GESTURE_TFJS_DIR) --output_directory $(GESTURE_DIR)$(if \
		$(CALIBRATION), --calibration $(CALIBRATION))

# Targets that only need *a* model: build the pretrained one if MODEL_DIR has none (an exported
# model is kept); those that need the TF.js weights or the records: fetch or build them once.
$(MODEL_DIR)/manifest.json:
	$(MAKE) model MODEL_DIR=$(MODEL_DIR)
$(GESTURE_DIR)/manifest.json:
	$(MAKE) model MODEL_DIR=$(MODEL_DIR) GESTURE_DIR=$(GESTURE_DIR)
$(HANDTRACKJS_MARKER): | $(VENV)/.installed
	$(PY) scripts/fetch_pretrained.py
data/hand_label_map.pbtxt:
	$(MAKE) data

demo: install | $(MODEL_DIR)/manifest.json ## Detect and track hands in VIDEO headless (results/demo.mp4, .jsonl, .png); no video: camera 0 in a window, else the samples/ video
	$(PY) demo.py $(if $(DEMO_VIDEO),--video $(DEMO_VIDEO)) --model $(MODEL_DIR) --output $(DEMO_OUTPUT) \
		--json results/demo.jsonl --picture $(DEMO_PICTURE)

data: install ## DATASETS (egohands) -> images/<split>/ + <split>_labels.csv -> data/<split>.record (EGOHANDS_ZIP/OXFORD_ARCHIVE: local archives)
ifeq ($(strip $(DATASETS)),egohands)
	$(PY) egohands_dataset_clean.py $(if $(EGOHANDS_ZIP),--zip $(EGOHANDS_ZIP)) $(DATA_ARGS)
else
	$(PY) mix_datasets.py $(DATASETS) $(if $(EGOHANDS_ZIP),--egohands-zip $(EGOHANDS_ZIP)) \
		$(if $(OXFORD_ARCHIVE),--oxford-archive $(OXFORD_ARCHIVE)) $(DATA_ARGS)
endif
	$(PY) generate_tfrecord.py

# `make data-allview`: the three sources of the shipped every-viewpoint model (model-checkpoint/allview*.yaml):
# EgoHands (by video), Oxford Hands (Movie_forrest + Skin carved out as eval), laptop-webcam photos (by session).
WEBCAM_DIR       ?= $(SHARED)/webcam-hands
ALLVIEW_EGOHANDS  = $(or $(EGOHANDS_ZIP),$(wildcard $(SHARED)/egohands-sample/egohands_data.zip))
ALLVIEW_OXFORD    = $(or $(OXFORD_ARCHIVE),$(wildcard $(SHARED)/oxford-hands/hand_dataset.tar.gz))
data-allview: install ## EgoHands + Oxford Hands + webcam photos (WEBCAM_DIR, split by sessions.csv) -> the allview recipe's data
	$(MAKE) --no-print-directory data DATASETS="egohands oxford webcam=voc:$(WEBCAM_DIR)" \
		EGOHANDS_ZIP="$(ALLVIEW_EGOHANDS)" OXFORD_ARCHIVE="$(ALLVIEW_OXFORD)" \
		DATA_ARGS="--carve-eval 0.1 --group-by $(WEBCAM_DIR)/sessions.csv $(DATA_ARGS)"

video: install ## Build videos/chess.mov from the EgoHands CHESS frames (EGOHANDS_ZIP=... for a local zip)
	$(PY) scripts/make_chess_video.py $(if $(EGOHANDS_ZIP),--zip $(EGOHANDS_ZIP))

train: install | $(HANDTRACKJS_MARKER) data/hand_label_map.pbtxt ## Fine-tune the hand detector (config in model-checkpoint/, RUN=name)
	$(PY) train.py --run $(RUN) $(TRAIN_ARGS)

export: install | $(HANDTRACKJS_MARKER) ## Export the latest checkpoint of RUN to hand_inference_graph/
	$(PY) export_inference_graph.py --checkpoint model-checkpoint/$(RUN) --output_directory $(MODEL_DIR) \
		$(if $(CALIBRATION),--calibration $(CALIBRATION),$(if $(wildcard images/train),--calibration images/train))

eval: install | $(MODEL_DIR)/manifest.json ## COCO metrics (AP@0.5, AP@[.5:.95], AR@100) + PR curve of the model, a row per source and split of EVAL_SPLIT
	$(PY) evaluate.py --model $(MODEL_DIR) --split $(EVAL_SPLIT)

batch: install | $(MODEL_DIR)/manifest.json ## Hands in every video of INPUT (folder, glob, list) on Ray -> OUTPUT/<name>.jsonl + summary; BATCH_ARGS="--address ray://HEAD:10001" for a cluster
	@test -n "$(INPUT)" || { echo "make batch: give INPUT=<folder, quoted glob or list of videos> (and OUTPUT=$(OUTPUT))" >&2; exit 2; }
	$(PY) detect_batch.py '$(INPUT)' --output $(OUTPUT) --model $(MODEL_DIR) $(BATCH_ARGS)

bench: install $(WEB_NPM_STAMP) | $(MODEL_DIR)/manifest.json $(GESTURE_DIR)/manifest.json $(BENCH_PRETRAINED) ## Benchmark: original way vs our detectors, tracking, one model vs two, on the real video (table + chart in results/); browser row
	$(PY) benchmarks/bench.py --source $(VIDEO) --model-dir $(MODEL_DIR) --gesture-dir $(GESTURE_DIR) \
		$(if $(filter handtrackjs,$(MODEL)),,--pretrained-dir $(TEST_MODEL_DIR))
	$(PY) benchmarks/bench_web.py --source $(VIDEO) --model-dir $(MODEL_DIR)
	$(PY) benchmarks/bench_batch.py --video $(VIDEO) --model-dir $(MODEL_DIR)

# The pretrained model beside a shipped default, for the bench's "versus" rows (the copy `make test` uses).
BENCH_PRETRAINED = $(if $(filter handtrackjs,$(MODEL)),,$(TEST_MODEL_DIR)/manifest.json)
$(TEST_MODEL_DIR)/manifest.json:
	$(MAKE) --no-print-directory model MODEL=handtrackjs MODEL_DIR=$(TEST_MODEL_DIR) GESTURE_DIR=$(GESTURE_DIR)

# The README's picture: the default model on the shipped sample, tracked (what `make demo` writes on a fresh clone).
SAMPLE_VIDEO     := $(shell $(PYTHON) -c 'from utils.common import config; print(config.SAMPLE_HAND_VIDEO.relative_to(config.ROOT))')
docs: install | $(MODEL_DIR)/manifest.json ## The README's picture docs/demo.png: the default model on the samples/ video
	$(PY) demo.py --video $(SAMPLE_VIDEO) --model $(MODEL_DIR) --output results/docs_demo.mp4 \
		--json results/docs_demo.jsonl --picture docs/demo.png

bench-gesture: install | $(MODEL_DIR)/manifest.json $(GESTURE_DIR)/manifest.json ## Gesture model's EgoHands AP; faces taken for hands on Oxford, with/without suppress_faces
	$(PY) benchmarks/bench_gesture.py --hand-model $(MODEL_DIR) --gesture-model $(GESTURE_DIR)

bench-data: install ## Benchmark the data pipeline and every importer (images/s) on the shared EgoHands and Oxford data
	$(PY) benchmarks/bench_data.py

test: install $(WEB_NPM_STAMP) ## Run the test suite (on its own copy of the pretrained models in .cache/test_model, test_gesture_model)
	$(MAKE) --no-print-directory model MODEL=handtrackjs MODEL_DIR=$(TEST_MODEL_DIR) GESTURE_DIR=$(TEST_GESTURE_DIR)
	$(if $(SHIPPED_FIRST),$(MAKE) --no-print-directory model MODEL=$(SHIPPED_FIRST) MODEL_DIR=$(TEST_DEFAULT_DIR) \
		GESTURE_DIR=$(TEST_GESTURE_DIR))
	HANDTRACK_MODEL_DIR=$(TEST_MODEL_DIR) HANDTRACK_GESTURE_DIR=$(TEST_GESTURE_DIR) \
		$(if $(SHIPPED_FIRST),HANDTRACK_DEFAULT_MODEL_DIR=$(TEST_DEFAULT_DIR)) $(PY) -m pytest tests $(TEST_ARGS)

$(WEB_NPM_STAMP): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund

web: install $(WEB_NPM_STAMP) | $(MODEL_DIR)/manifest.json ## Export MODEL_DIR's model for the browser -> web/model/ (npm ci: LiteRT.js, pinned in web/package-lock.json)
	$(PY) scripts/export_web.py --model-dir $(MODEL_DIR) --output web/model

serve-web: install ## Serve the webcam page (after `make web`) at http://localhost:WEB_PORT/ (8000), offline
	$(PY) scripts/serve_web.py --port $(WEB_PORT)

lint: install ## Lint with ruff
	$(VENV)/bin/ruff check .

clean: ## Remove build outputs (keeps .venv and the download cache)
	rm -rf $(filter-out $(MODEL_DIR)/hand_label_map.pbtxt,$(wildcard $(MODEL_DIR)/*)) \
		$(GESTURE_DIR) data images results *_labels.csv .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
