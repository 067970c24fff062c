# Quickstart:  make repro   (set up .venv from the lock file, then run the pipeline)
#              make test    (set up .venv if needed, then run the test suite)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Stage commands call `python`: run them with the venv first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv repro test test-fast lint format lock clean help report experiment exp-show venv-remote

help:
	@echo "make repro     create $(VENV) from requirements.lock and run 'dvc repro'"
	@echo "make test      create $(VENV) if needed and run the test suite"
	@echo "make test-fast unit tests only (no end-to-end dvc runs)"
	@echo "make lint      ruff check + format check"
	@echo "make lock      re-resolve requirements.lock from pyproject.toml (needs uv)"
	@echo "make report    review report of the workspace against BASE (default main)"
	@echo "make experiment PROFILE=tom-and-jerry SET='key=value ...'  dvc exp run with a"
	@echo "               profile's params (profiles/), then SET's (the later value wins)"
	@echo "make exp-show  dvc exp show with the headline metrics and the params people change"
	@echo "make venv-remote  add the DVC S3 and GCS remote plugins to $(VENV)"

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

# reports/machine.json: the kind of CPU the results were computed on (docs/reproducibility.md)
repro: $(STAMP)
	$(BIN)/dvc repro
	$(BIN)/python -m pipeline.tools.machine --write reports/machine.json

# The real run and experiments: `make experiment PROFILE=tom-and-jerry SET="key=value ..."`
# (profiles/<name>.yaml, then SET; ARGS go to `dvc exp run`, e.g. ARGS=--queue).
# Code review and CI: `make report BASE=origin/main`.
BASE    ?= main
PROFILE ?=
SET     ?=
ARGS    ?=

report: $(STAMP)
	$(BIN)/python -m pipeline.tools.report --base $(BASE)

experiment: $(STAMP)
	$(BIN)/python -m pipeline.tools.experiment $(if $(PROFILE),--profile $(PROFILE)) \
	  $(addprefix --set ,$(SET)) $(if $(ARGS),-- $(ARGS))

# `dvc exp show` lists every param of params.yaml and every dependency path (DVC 3.67 has no
# setting for its default columns); this view keeps the headline metrics (reports/summary.json)
# and the params people change. ARGS go to dvc exp show (e.g. ARGS=--csv, ARGS="-A").
EXP_SHOW_KEEP := ^(Experiment|Created|seed|profile|data\.image_size|model\.(architecture|alpha|weights)|baseline\.accuracy|transfer\.(accuracy|epochs|learning_rate)|finetune\.(accuracy|macro_f1|val_accuracy|verdict|epochs|learning_rate|unfreeze_layers))$$

exp-show: $(STAMP)
	$(BIN)/dvc exp show --no-pager --drop '.*' --keep '$(EXP_SHOW_KEEP)' $(ARGS)

venv-remote: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-build-isolation -e ".[remote]"

# Three pytest workers (pytest-xdist) on two cores, one test file each at a time, handed out in
# the order of tests/conftest.py's FIRST_FILES: the end-to-end tests spend much of their time
# starting Python and TensorFlow in stage subprocesses and in DVC, which leaves a core idle that a
# third worker uses (docs/contributing.md has the measurements).
TEST_WORKERS ?= 3

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lock:
	uv pip compile pyproject.toml --extra dev --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --generate-hashes --no-header \
	  --emit-index-url -o requirements.lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
