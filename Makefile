# The two commands of the README:   make run   (the main job)   and   make test   (the tests).
# Both create .venv on first use: torch first (the CPU build), then everything else pinned by constraints.txt.
VENV   ?= .venv
PYTHON ?= python3
TORCH  ?= torch==2.13.0
BIN    := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: install run paper test test-fast lint ui gpu-check

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

run: install            ## prepare -> embed -> sweep for the datasets in params.yaml (DVC skips what is up to date)
	dvc repro

paper: install          ## the study on IMDB, SST-2 and AG News, 5 draws per size (studies/paper; about an hour on 2 cores)
	cd studies/paper && dvc repro   # a DVC repository of its own (dvc init --subdir): see studies/paper/.dvcignore

test: install           ## the whole suite, as CI runs it (no network: the encoder comes from a package)
	HF_HUB_OFFLINE=1 python -m pytest -n 2

test-fast: install      ## the quick loop: skips the end-to-end tests marked `slow` (PostgreSQL, Chromium, dvc repro, serving)
	HF_HUB_OFFLINE=1 python -m pytest -n 2 -m "not slow"

gpu-check: install      ## the GPU proof: CUDA against the CPU, timed (docs/performance.md#gpu-proof); without CUDA its CPU-only dry run
	HF_HUB_OFFLINE=1 python benchmarks/gpu_check.py $$(python -c 'import torch; print("" if torch.cuda.is_available() else "--dry-run")') --out .gpu/gpu_check.json

lint: install
	ruff check src tests benchmarks

ui: install             ## browse runs at http://127.0.0.1:5000 (the address printed opens the runs view: every stage's run, the metrics as columns)
	@python -c 'from embalance.tracking import ui_address; print("Open", ui_address("http://127.0.0.1:5000", "sqlite:///mlflow.db", "embalance"))'
	mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000
