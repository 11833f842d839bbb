"""Compiled inference: the trained ensemble as flat arrays, evaluated by numba, one call per tick.

The libraries train; the compiled arrays serve (DESIGN.md, "Where the microseconds go").
``export`` turns fitted models into arrays and files, ``evaluators`` holds one numba evaluator per
model kind (one row, and a batch; the trees' per-tick walks and batches in ``walks``), ``packed`` the whole ensemble in one call, ``cost`` what a version costs to serve per tick. The trees give their
library's probabilities bit for bit and the logistic regression to ~1e-13; the LSTM is within ~2
float32 ulps of torch before calibration (tests/unit/pipeline/models/test_compiled.py; figures in
bench/results/inference.json).

The LSTM: a model trained to read each row's window of ``window`` rows from a zero state needs
``window x layers`` cell steps per tick to be served faithfully (~5 us at window 16, hidden 32).
``LSTMModel`` therefore trains by default with its state carried (``state="carried"``: the model
*is* one step per row with h and c kept, trained by truncated BPTT), so serving it is one cell
step per tick (~0.7 us) and still exactly the trained model; versions trained on windows keep
being served by the window evaluator (the export's ``carried`` flag). The trees walk eight at a
time per tick (``walks``), bit for bit the same sums. Figures:
bench/results/latency.json (the whole tick-to-decision path) and inference.json.
"""

from pipeline.models.compiled.export import export_ensemble, export_model, load_compiled, save_compiled
from pipeline.models.compiled.packed import CompiledEnsemble, member_proba_batch

__all__ = ["CompiledEnsemble", "export_ensemble", "export_model", "load_compiled", "member_proba_batch",
           "save_compiled"]
