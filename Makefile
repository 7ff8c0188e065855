# The README's two commands: `make demo` and `make test`. Both set up everything they need, and are idempotent.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.mlps-installed

.PHONY: setup cluster cluster-down demo test unit clean

# One set-up path for Python: the project venv with the package, the engines' dependencies and the test tools,
# all pinned (requirements/). Jobs on the compute nodes run this same interpreter (the profile's
# environment.python defaults to the interpreter running mlps-slurm).
setup: $(STAMP)
$(STAMP): requirements/jobs.txt requirements/nodeps.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/jobs.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/nodeps.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . \
	  || $(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

# A real Slurm 22.05 cluster on this machine (4 emulated nodes); installs its Debian packages when missing.
cluster:
	bin/mlps-local-cluster up

cluster-down:
	bin/mlps-local-cluster down

DEMO_SCALE ?= 0.002
demo: setup cluster
	$(VENV)/bin/mlps-slurm submit checkpointing --model llama3-8b --scale $(DEMO_SCALE) \
	  --seconds-between-checkpoints 0 --wait --timeout 900

test: setup cluster
	$(PY) -m pytest -q tests

unit: setup
	$(PY) -m pytest -q tests/unit

clean:
	rm -rf $(VENV) build *.egg-info
