# make demo: the end-to-end story on a local sqlite MLflow store (DEMO_ARGS="--ui-port 5001").
# make test: ruff + the whole pytest suite.   make bench: benchmarks/ (QUICK=1 for seconds).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export KERAS_BACKEND ?= torch
export MLTRAIL_STRICT ?= 1

.PHONY: venv test lint demo bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[all,test]"
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src integrations tests examples benchmarks
	$(VENV)/bin/ruff format --check src integrations tests examples benchmarks

test: lint
	$(VENV)/bin/pytest -q -p no:cacheprovider --durations=25 $(PYTEST_ARGS)

demo: $(STAMP)
	MLTRAIL_STRICT=0 $(PY) examples/demo.py $(DEMO_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/run.py $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) build *.egg-info
