# The README's two commands: `make demo` and `make test`.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export RADIOGENOMICS_TESTDATA ?= $(HOME)/.cache/radiogenomics-testdata

.PHONY: demo test testdata venv bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test,radiomics,synth,runtime,export]"
	touch $(STAMP)

testdata: $(STAMP)
	$(PY) -m Testing.fetch_data
	@# the viewer's browser tests drive Debian's Chromium (Playwright cannot download one)
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)

test: testdata
	$(PY) -m pytest -q
	$(MAKE) slicer-test

# PATIENTS=N trains on N synthetic patients (default 40); CONFIG=small EPOCHS=8 the old way
demo: $(STAMP)
	$(PY) -m RadioGenomicsLib.demo --out demo-out $(if $(PATIENTS),--patients $(PATIENTS)) \
		$(if $(CONFIG),--config $(CONFIG)) $(if $(EPOCHS),--epochs $(EPOCHS))

bench: testdata
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) .venv-slicer demo-out .pytest_cache Testing/artefacts

# Slicer's own libraries, in one environment: the Slicer module's MRML glue against the
# real MRML classes of the slicer-core wheel (which pins its own vtk), and the web viewer
# (trame-slicer 2.0, which needs slicer-core 5.11.x) with the library and torch beside it,
# and the light runtimes (the viewer predicts exported bundles on them).
SLICER_VENV := .venv-slicer
SLICER_PY := $(SLICER_VENV)/bin/python
SLICER_STAMP := $(SLICER_VENV)/.installed
VIEWER_ARGS ?= --models demo-out --study demo-out/cohort/images

.PHONY: slicer-venv slicer-test viewer

slicer-venv: $(SLICER_STAMP)

$(SLICER_STAMP): pyproject.toml
	$(PYTHON) -m venv --clear $(SLICER_VENV)
	$(SLICER_PY) -m pip install -q "$(TORCH)"
	$(SLICER_PY) -m pip install -q -e ".[viewer,viewer-test,test,synth,runtime]"
	touch $(SLICER_STAMP)

slicer-test: $(SLICER_STAMP)
	$(SLICER_PY) -m pytest -q Testing/slicer/test_slicer_mrml.py Testing/slicer/test_viewer.py

# the web viewer on http://127.0.0.1:8080/ (`make demo` first gives it a model and studies)
viewer: $(SLICER_STAMP)
	$(SLICER_VENV)/bin/radiogenomics viewer $(VIEWER_ARGS)

# the Slicer module as a zip to add in Slicer's Additional module paths (no Slicer build
# needed; the standard library builds it): dist/RadioGenomics-slicer-<version>.zip
.PHONY: slicer-package
slicer-package:
	$(PYTHON) RadioGenomics/Packaging/slicer_package.py --out dist
