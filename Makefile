# verl-sdar: two commands on a fresh machine.
#   make test   set up .venv (CPU torch, verl, alfworld, this package) and run the test suite
#   make test-fast   the same without the slow tiers (no main_ppo, no Ray: `-m "unit or envs"`, tests/conftest.py)
#   make lint   ruff (settings in pyproject.toml)
#   make demo   set up .venv, build the tiny model + code-word data, run SDAR on CPU via main_ppo
# Set VENV=... to use another virtual environment (it is created if missing).

VENV ?= .venv
PY := $(VENV)/bin/python
WORK ?= .work
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.verl-sdar-installed
PYTEST_ARGS ?=

.PHONY: install test test-fast lint demo clean

install: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: this pin takes the local CPU build (a plain `torch` would pull CUDA wheels)
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	# alfworld builds jericho and fast-downward from source (a few minutes, gcc + cmake)
	$(PY) -m pip install -q -e '.[test,alfworld,search,webshop,bench]' --config-settings editable_mode=compat
	touch $@

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

test-fast: install
	$(PY) -m pytest -q -m "unit or envs" $(PYTEST_ARGS) tests

lint: install
	$(VENV)/bin/ruff check .

demo: install
	$(PY) -m verl_sdar.tiny_model $(WORK)/tiny-model
	$(PY) -m verl_sdar.tasks.codeword $(WORK)/codeword
	VERL_SDAR_WORK=$(abspath $(WORK)) $(PY) -m verl.trainer.main_ppo \
		--config-path=$(abspath recipes/cpu) --config-name=codeword_sdar $(ARGS)

clean:
	rm -rf $(WORK) outputs
