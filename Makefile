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

test: testdata
	$(PY) -m pytest -q
	$(MAKE) slicer-test

demo: $(STAMP)
	$(PY) -m RadioGenomicsLib.demo --out demo-out

bench: testdata
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) demo-out .pytest_cache

# The Slicer module's MRML glue against the real MRML classes of the slicer-core wheel,
# which pins its own vtk: its own environment.
SLICER_VENV := .venv-slicer
SLICER_PY := $(SLICER_VENV)/bin/python
SLICER_STAMP := $(SLICER_VENV)/.installed
SLICER_CORE ?= slicer-core==5.13.31053.0

.PHONY: slicer-venv slicer-test

slicer-venv: $(SLICER_STAMP)

$(SLICER_STAMP):
	$(PYTHON) -m venv $(SLICER_VENV)
	$(SLICER_PY) -m pip install -q "$(SLICER_CORE)" numpy==2.4.6 SimpleITK==2.5.7 pytest==9.2.0
	touch $(SLICER_STAMP)

slicer-test: $(SLICER_STAMP)
	$(SLICER_PY) -m pytest -q Testing/slicer/test_slicer_mrml.py
