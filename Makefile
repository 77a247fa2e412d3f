# Quick start: `make demo` (set up + main job end to end on synthetic data), `make test` (set up + all tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build; an unpinned torch would pull several GB of CUDA wheels (see README for GPU installs).
TORCH_SPEC ?= torch==2.13.0
DEMO ?= demo
PYTEST_ARGS ?=

.PHONY: install demo test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
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
	$(BIN)/monai-lgg synth $(DEMO)/kaggle_3m
	$(BIN)/monai-lgg convert $(DEMO)/kaggle_3m $(DEMO)/lgg
	$(BIN)/monai-lgg stats $(DEMO)/lgg
	$(RUN) training --config_file $(BUNDLE)/configs/train.json $(DEMO_ARGS)
	$(RUN) --config_file "['$(BUNDLE)/configs/train.json','$(BUNDLE)/configs/evaluate.json']" $(DEMO_ARGS) --output_dir $(DEMO)/unet/eval
	$(RUN) --config_file $(BUNDLE)/configs/inference.json --dataset_dir $(DEMO)/lgg --ckpt_path $(DEMO)/unet/models/model.pt --output_dir $(DEMO)/unet/predictions
	@echo "demo done: per-patient scores in $(DEMO)/unet/eval/per_patient.csv, summary.json, overlays/; masks in $(DEMO)/unet/predictions/"

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check monai_lgg tests tools

clean:
	rm -rf $(VENV) $(DEMO)
