"""Compiled inference: the trained ensemble as flat arrays, evaluated by numba, one call per tick.

The libraries train; the compiled arrays serve (DESIGN.md, "Where the microseconds go").
``export`` turns fitted models into arrays and files, ``evaluators`` holds one numba evaluator per
model kind (one row, and a batch), ``packed`` the whole ensemble in one call. The trees give their
library's probabilities bit for bit and the logistic regression to ~1e-13; the LSTM is within ~2
float32 ulps of torch before calibration (tests/unit/pipeline/models/test_compiled.py; figures in
bench/results/inference.json).

Open question (the LSTM, not settled here): the trained LSTM reads each row's window of
``window`` rows from a zero state, so the faithful per-tick evaluator re-runs ``window x layers``
cell steps on every tick (~6 us at window 16, hidden 32). One step per tick with h and c carried
across ticks costs ~10x less, but is a different model from the one trained and validated: it
would need training on carried state (or accepting the skew) before serving it.
"""

from pipeline.models.compiled.export import export_ensemble, export_model, load_compiled, save_compiled
from pipeline.models.compiled.packed import CompiledEnsemble, member_proba_batch

__all__ = ["CompiledEnsemble", "export_ensemble", "export_model", "load_compiled", "member_proba_batch",
           "save_compiled"]
