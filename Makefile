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

demo: install
	$(BIN)/monai-lgg synth $(DEMO)/kaggle_3m
	$(BIN)/monai-lgg convert $(DEMO)/kaggle_3m $(DEMO)/lgg
	$(BIN)/monai-lgg stats $(DEMO)/lgg

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check monai_lgg tests tools

clean:
	rm -rf $(VENV) $(DEMO)
