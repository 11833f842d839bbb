"""The pure-function part of a backtest, computed once over the whole replay: features at every
quote update and the ensemble's P(up) there.

Both are pure functions of the event stream, so batching them changes nothing (DESIGN: "batch
the parts that are pure functions of the data"): the features come from the same compiled step as
the online engine (parity-tested), and the probabilities are the live path's, bit for bit: they
come from the same compiled ensemble the daemon serves (pipeline.models.compiled: the exported
arrays, ``CompiledEnsemble.proba_batch``; within 1e-6 of the libraries, tested there), whose batch
gives what its one-call-per-tick path gives row by row:

- logistic regression, random forest and XGBoost read one row: row by row or in a batch is the
  same arithmetic;
- the LSTM reads the rows *of its sampling grid* (its last ``window`` of them, or all of them with
  its state carried). Training rows are every ``stride``-th quote update, so the model learned
  sequences spaced ``stride`` quotes apart. At quote ``j`` its rows are quotes ``j, j - stride,
  ...``: quotes split into ``stride`` interleaved phases, and each phase is one time-ordered
  sequence. The live runtime keeps one LSTM ring (window or carried state) per phase and computes
  the same (``tick_by_tick_p_up`` is that reference; tests compare).

Rows before every feature is warm carry NaN features and ``ok = False``: the engine neither trades
nor trusts the model on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.features.core import KIND_QUOTE
from pipeline.features.engine import run_program, warm_mask
from pipeline.features.catalog import compile_program
from pipeline.features.events import EventArrays
from pipeline.models.compiled import CompiledEnsemble, export_ensemble


@dataclass(frozen=True)
class Signals:
    names: tuple[str, ...]  # columns of ``features``
    quote_index: np.ndarray  # event index of each row (every quote update)
    features: np.ndarray  # [rows, names], NaN before warm
    p_up: np.ndarray  # [rows], NaN where there is no model or it is not warm
    ok: np.ndarray  # [rows] bool: features warm and a probability present


def feature_rows(events: EventArrays, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(quote event indices, features there with NaN before warm, the warm mask per row)."""
    quote_index = np.flatnonzero(events.kind == KIND_QUOTE).astype(np.int64)
    program = compile_program(list(names))
    values, progress = run_program(program, events, quote_index)
    warm = warm_mask(program, progress, events).all(axis=1)
    values[~warm] = np.nan
    # A warm feature can still be undefined (e.g. no trade yet for a trade feature): not ok either.
    warm &= np.isfinite(values).all(axis=1)
    return quote_index, values, warm


def compute_signals(events: EventArrays, engine_names: tuple[str, ...], ensemble: Any | None,
                    stride: int) -> Signals:  # fmt: skip
    """Features for the engine (``engine_names``) plus the model's inputs, and P(up) at each quote.
    ``ensemble``: an ``Ensemble`` (compiled here) or a ``CompiledEnsemble``."""
    model_names = tuple(ensemble.feature_names) if ensemble is not None else ()
    names = tuple(dict.fromkeys((*engine_names, *model_names)))
    quote_index, values, warm = feature_rows(events, names)
    p_up = np.full(len(quote_index), np.nan)
    if ensemble is not None and warm.any():
        columns = [names.index(n) for n in model_names]
        first = int(np.argmax(warm))
        X = values[first:, columns]
        p_up[first:] = batch_p_up(ensemble, X, stride)
    ok = warm & np.isfinite(p_up) if ensemble is not None else warm
    return Signals(names, quote_index, values, p_up, ok)


def as_compiled(ensemble: Any) -> CompiledEnsemble:
    """The compiled form the daemon serves (an ``Ensemble`` is exported; nothing is approximated)."""
    return ensemble if isinstance(ensemble, CompiledEnsemble) else CompiledEnsemble(export_ensemble(ensemble))


def batch_p_up(ensemble: Any, X: np.ndarray, stride: int) -> np.ndarray:
    """P(up) for every row of ``X`` (consecutive quotes), each phase of the sampling grid as one
    sequence, by the compiled ensemble's batch evaluators."""
    compiled = as_compiled(ensemble)
    out = np.empty(len(X))
    for phase in range(min(stride, len(X))):
        out[phase::stride] = compiled.proba_batch(X[phase::stride])
    return out


def tick_by_tick_p_up(ensemble: Any, X: np.ndarray, stride: int, row: int, window: int | None = None) -> float:
    """The reference: what the live runtime computes at ``row`` -- one compiled call per tick
    (``proba_tick_in``) over this row's phase from its first row, on a fresh ring, which holds
    the LSTM's last window or its carried state. (``window`` is implied by the model; kept for
    callers that pass it.)"""
    compiled = as_compiled(ensemble)
    ring, state = compiled.new_ring()
    p = float("nan")
    for x in X[row % stride : row + 1 : stride]:
        p = compiled.proba_tick_in(np.ascontiguousarray(x, dtype=np.float64), ring, state)
    return float(p)
