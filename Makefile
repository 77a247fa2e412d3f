# Quick start: `make demo` (set up + main job end to end on synthetic data), `make test` (set up + all tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build; an unpinned torch would pull several GB of CUDA wheels (see README for GPU installs).
TORCH_SPEC ?= torch==2.13.0
DEMO ?= demo
PYTEST_ARGS ?=

.PHONY: install demo test test-monailabel lint clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	@echo "== installing torch (CPU), MONAI and monai-lgg into $(VENV) (a few minutes the first time)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

BUNDLE ?= bundles/unet
RUN := $(BIN)/python -m monai.bundle run
# Outputs of the demo live in $(DEMO)/ (never in the bundle folder, so no real-data checkpoint is resumed).
DEMO_ARGS = --dataset_dir $(DEMO)/lgg --ckpt_dir $(DEMO)/unet/models --log_dir $(DEMO)/unet/logs

demo: install
	rm -rf $(DEMO)
	@echo "== generating 8 synthetic patients in the Kaggle layout, converting them to NIfTI"
	$(BIN)/monai-lgg synth $(DEMO)/kaggle_3m
	$(BIN)/monai-lgg convert $(DEMO)/kaggle_3m $(DEMO)/lgg
	$(BIN)/monai-lgg stats $(DEMO)/lgg
	@echo "== training the UNet bundle on fold 0 (the longest step: a few minutes on 2 CPU cores)"
	$(RUN) training --config_file $(BUNDLE)/configs/train.json $(DEMO_ARGS)
	@echo "== evaluating it per patient on the test fold"
	$(RUN) --config_file "['$(BUNDLE)/configs/train.json','$(BUNDLE)/configs/evaluate.json']" $(DEMO_ARGS) --output_dir $(DEMO)/unet/eval
	@echo "== segmenting every volume"
	$(RUN) --config_file $(BUNDLE)/configs/inference.json --dataset_dir $(DEMO)/lgg --ckpt_path $(DEMO)/unet/models/model.pt --output_dir $(DEMO)/unet/predictions
	@echo "demo done: per-patient scores in $(DEMO)/unet/eval/per_patient.csv, summary.json, overlays/; masks in $(DEMO)/unet/predictions/"

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# MONAI Label for real, in its own environment (about 8 GB; not part of `make test`): MONAI Label's documented
# install (pip install monailabel) beside a torch/torchvision pair that imports and runs on the CPU here (a CUDA
# build: PyPI's torchvision does not load beside the CPU torch of .venv), pydicom 2.4 (pydicom 3 breaks
# pydicom-seg) with the dicomweb-client release that accepts it, and this project (editable).
ML_VENV ?= .venv-monailabel
ML_BIN := $(ML_VENV)/bin
ML_TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
ML_SPEC ?= monailabel==0.8.5 pydicom==2.4.4 dicomweb-client==0.59.1

$(ML_VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(ML_VENV)
	$(ML_BIN)/python -m pip install -q --upgrade pip
	$(ML_BIN)/python -m pip install -q $(ML_TORCH_SPEC)
	$(ML_BIN)/python -m pip install -q $(ML_SPEC) -e . pytest
	touch $@

# starts `monailabel start_server` on 127.0.0.1 with the exported UNet and checks /infer on a real patient
test-monailabel: $(ML_VENV)/.installed
	$(ML_BIN)/python -m pytest -q tests/test_monailabel.py $(PYTEST_ARGS)

# what .ci/run checks before the tests (and .pre-commit-config.yaml before each commit)
LINT_PATHS := monai_lgg tests tools
lint: install
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

clean:
	rm -rf $(VENV) $(ML_VENV) $(DEMO)
