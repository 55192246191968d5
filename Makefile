# Two commands do all the set-up on a fresh machine (see README):
#   make course   create .venv, install, execute the course notebooks in order into build/notebooks
#                 (notebook 05 pretrains on the offline data set) and print the final probe table
#   make test     create .venv, install, run the unit tests (and the notebooks under nbval)
# While working on the package: make test-fast (unit tests only, a few minutes) and make lint (ruff).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
RUN    ?= runs/shapes
CHECKPOINT_STEPS ?= 10400
# the shipped checkpoints' learning rate: the course's recipe before its peak lr moved to 3e-3 (docs/results.md)
SHIPPED_LR ?= 0.0015

CHECKPOINT08_STEPS ?= 5000

.PHONY: setup course checkpoint checkpoint-mono checkpoints08 test test-fast lint bench clean site student

setup: $(VENV)/.installed

# If $(PYTHON) can already import torch (and is not itself a venv, whose packages a new venv cannot
# see), the venv is created with --system-site-packages: that torch is reused, not installed again
# (the requirement on torch is loose; only a torchvision that pip must add and that pins another
# torch would pull a second one into the venv). Otherwise a plain venv, and pip installs PyTorch.
HAS_TORCH = $(PYTHON) -c "import sys, torch; sys.exit(sys.prefix != sys.base_prefix)" >/dev/null 2>&1

$(VENV)/.installed: pyproject.toml
	@if $(HAS_TORCH); then \
		echo "$(PYTHON) has torch: creating $(VENV) with --system-site-packages to reuse it"; \
		$(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		echo "no torch to reuse in $(PYTHON): creating a plain $(VENV); pip installs PyTorch"; \
		$(PYTHON) -m venv $(VENV); \
	fi
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[course,dev]"
	touch $@

course: setup
	$(BIN)/jepa-lite course --out build/notebooks

# the pretrained checkpoint shipped for notebook 06 (see data/README.md): ~70 min on one thread
checkpoint: setup
	OMP_NUM_THREADS=1 $(BIN)/jepa-lite train --data shapes --steps $(CHECKPOINT_STEPS) --lr $(SHIPPED_LR) \
		--log-every 100 --out $(RUN) --no-resume --quiet
	$(BIN)/python -c "import shutil; shutil.copy('$(RUN)/checkpoint.pt', 'data/shapes_tiny.pt')"

# the same recipe on the same images in one grey palette (notebook 06, section 6): data/shapes_mono_tiny.pt
checkpoint-mono: setup
	OMP_NUM_THREADS=1 $(BIN)/jepa-lite train --data shapes-mono --steps $(CHECKPOINT_STEPS) --lr $(SHIPPED_LR) \
		--log-every 100 --out $(RUN)-mono --no-resume --quiet
	$(BIN)/python -c "import shutil; shutil.copy('$(RUN)-mono/checkpoint.pt', 'data/shapes_mono_tiny.pt')"

# notebook 08's three checkpoints (JEPA / pixels / both, equal steps): data/notebook08/*.pt
checkpoints08: setup
	PYTHON=$(BIN)/python LR=$(SHIPPED_LR) bash benchmarks/make_notebook08_checkpoints.sh $(CHECKPOINT08_STEPS)

test: setup
	$(BIN)/python -m pytest

# the unit tests alone: no notebooks (nbval off, and its options out of addopts), no browser, no website
# build, no data-parallel processes, nothing slow (the markers in pyproject.toml); a few minutes on 2 cores
FAST = not notebook and not browser and not site and not distributed and not slow
test-fast: setup
	$(BIN)/python -m pytest tests -p no:nbval -o addopts="-ra --durations=5" -m "$(FAST)"

# ruff (settings in pyproject.toml) on the package, the tests, the benchmarks and the site's scripts
lint: setup
	$(BIN)/python -m ruff check jepa_lite tests benchmarks site

bench: setup
	$(BIN)/python benchmarks/bench_masks.py
	$(BIN)/python benchmarks/bench_train_step.py
	$(BIN)/python benchmarks/bench_data.py

clean:
	rm -rf $(VENV) build *.egg-info

# the course website from the committed notebooks, not executed (site/build.py): warnings are
# errors, then every internal link is checked; open build/site/html/index.html
site: setup
	$(BIN)/python site/build.py --out build/site

# the student notebooks (jepa_lite.course.student): each exercise's solution replaced by a stub that
# raises, followed by its check, in build/student
student: setup
	$(BIN)/jepa-lite student --out build/student
