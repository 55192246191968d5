# Two commands do all the set-up on a fresh machine (see README):
#   make course   create .venv, install, pretrain on the offline data set and print the probe table
#   make test     create .venv, install, run the unit tests (and the notebooks under nbval)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
RUN    ?= runs/shapes
BUDGET ?= 5

.PHONY: setup course test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[course,dev]"
	touch $@

course: setup
	$(BIN)/jepa-lite train --data shapes --budget-minutes $(BUDGET) --out $(RUN)
	$(BIN)/jepa-lite probe --checkpoint $(RUN)

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python benchmarks/bench_masks.py
	$(BIN)/python benchmarks/bench_train_step.py
	$(BIN)/python benchmarks/bench_data.py

clean:
	rm -rf $(VENV) build *.egg-info
