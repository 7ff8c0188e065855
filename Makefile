# The README's two commands: `make demo` and `make test`. Both set up everything they need, and are idempotent.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.mlps-installed

.PHONY: setup bytecode cluster cluster-down browser demo test unit clean

# One set-up path for Python: the project venv with the package, the engines' dependencies and the test tools,
# all pinned (requirements/). Jobs on the compute nodes run this same interpreter (the profile's
# environment.python defaults to the interpreter running mlps-slurm).
# editable_mode=compat: a plain path in a .pth file. setuptools' default editable finder is imported by every
# Python that starts in the venv (56 ms each; a chain starts dozens, 12 at once for the demo's engine step).
EDITABLE := --config-settings editable_mode=compat
setup: $(STAMP)
$(STAMP): requirements/jobs.txt requirements/nodeps.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/jobs.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/nodeps.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . $(EDITABLE) \
	  || $(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e . $(EDITABLE)
	touch $@

# The package's bytecode, current: pip compiles a regular install, not an editable one, and where
# PYTHONDONTWRITEBYTECODE is set (this machine and CI) every Python a job starts would compile mlps_slurm again
# (0.2 s of a preflight node check's 0.4 s start). Only changed modules are compiled.
bytecode: setup
	$(PY) -m compileall -q mlps_slurm

# A real Slurm 22.05 cluster on this machine (4 emulated nodes); installs its Debian packages when missing.
cluster:
	bin/mlps-local-cluster up

cluster-down:
	bin/mlps-local-cluster down

DEMO_SCALE ?= 0.002
demo: bytecode cluster
	$(VENV)/bin/mlps-slurm submit checkpointing --model llama3-8b --scale $(DEMO_SCALE) \
	  --seconds-between-checkpoints 0 --wait --timeout 900

# A headless browser for the report test (tests/unit/test_report.py loads the page and screenshots it): Debian's
# chromium, installed when missing (as root with apt-get; otherwise that test is skipped and says how to get it).
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { [ "$$(id -u)" = 0 ] \
	  && command -v apt-get >/dev/null && echo "installing chromium (the report test's headless browser)" \
	  && apt-get -o DPkg::Lock::Timeout=600 -qq update >/dev/null \
	  && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -qq install -y --no-install-recommends \
	     chromium >/dev/null; } || echo "warning: no chromium: the report's browser test is skipped"

test: bytecode cluster browser
	$(PY) -m pytest -q tests

unit: bytecode
	$(PY) -m pytest -q tests/unit

clean:
	rm -rf $(VENV) build *.egg-info
