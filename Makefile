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
	$(PY) -m pip install -q -e ".[test,radiomics]"
	touch $(STAMP)

testdata: $(STAMP)
	$(PY) -m Testing.fetch_data

test: testdata
	$(PY) -m pytest -q

demo: testdata
	$(PY) -m RadioGenomicsLib.demo --out demo-out

bench: testdata
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) demo-out .pytest_cache
