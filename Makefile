# The two set-up commands (README): `make demo` runs the main job end to end on embedded
# defaults; `make test` runs the tests. Both create the virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, on its own: the local CPU wheel. A bare `torch` pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/autoscalp ingest --source synthetic
	$(BIN)/autoscalp data info

test: $(BIN)/.installed
	$(BIN)/pytest -q

test-fast: $(BIN)/.installed
	$(BIN)/pytest -q -m "not slow"

bench: $(BIN)/.installed
	$(BIN)/python bench/bench_ingest.py

clean:
	rm -rf $(VENV) .autoscalp
