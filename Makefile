# The two set-up commands (README): `make demo` runs the main job end to end on embedded
# defaults; `make test` runs the tests. Both create the virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast bench clean clean-numba

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, on its own: the local CPU wheel. A bare `torch` pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/.installed
	# is the installation sound? (warnings are fine on a fresh home: nothing trained or cached yet)
	$(BIN)/autoscalp doctor
	$(BIN)/autoscalp ingest --source synthetic
	$(BIN)/autoscalp data info
	$(BIN)/autoscalp features build
	# a small tuning budget (3 Optuna trials per model) keeps the demo to about a minute on 2 cores;
	# the config's default (training.tuning.trials: 30) is the production budget
	$(BIN)/autoscalp train --trials 3
	# the retrain ended with the promotion gate; now the newest version's backtest beside its baselines
	$(BIN)/autoscalp backtest --model latest --report .autoscalp/reports/backtest.html
	# the daemon: the stored ticks replayed as fast as possible through the champion (if any), the
	# engine and the paper broker, journaled; /health and /metrics on 127.0.0.1:8787 while it runs
	$(BIN)/autoscalp serve --feed replay --speed 0 --duration 120
	# what a user sees of it all: champion/challenger with their backtests, the schedule, the daemon
	$(BIN)/autoscalp status

test: $(BIN)/.installed
	$(BIN)/pytest -q

test-fast: $(BIN)/.installed
	$(BIN)/pytest -q -m "not slow"

bench: $(BIN)/.installed
	for b in ingest features models engine retrain venue backtest inference runtime; do $(BIN)/python bench/bench_$$b.py || exit 1; done
	$(BIN)/python bench/latency.py

# numba's on-disk cache is checked against the source file of the function compiled, not of what
# it inlines: after editing e.g. pipeline/models/compiled/evaluators.py, a cached caller in another
# module (packed.ensemble_proba, serving/runtime/quote_kernel.py) still runs the old code. Clear it.
clean-numba:
	find pipeline serving -name '*.nbi' -delete -o -name '*.nbc' -delete

clean: clean-numba
	rm -rf $(VENV) .autoscalp
