"""One compiled call per quote once the features are warm: the feature step, the model's row, the
sampling phase and the ensemble (``ModelRuntime.on_quote``'s work, in one crossing into numba).

The runtime used to make three calls per quote (the feature step, the row gather, the ensemble),
each unboxing its arrays again: about 19 arrays at ~30 ns each, plus the Python between them.
Here every array lives in one numba structref (``QuoteKernel``), unboxed as one object, and the
call runs the same compiled functions in the same order, so the values are the same bit for bit
(tests/unit/serving/runtime/test_quote_kernel.py compares it with the three calls).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, types
from numba.experimental import structref

from pipeline.features.core import KIND_QUOTE
from pipeline.features.step import step
from pipeline.models.compiled.packed import ensemble_proba

PHASE = 0  # the kernel's int64 ``status``: [the last quote's sampling phase (-1: none yet)]
_NAN = math.nan


@structref.register
class QuoteKernelType(types.StructRef):
    def preprocess_fields(self, fields):  # noqa: ANN001, ANN201
        return tuple((name, types.unliteral(typ)) for name, typ in fields)


class QuoteKernel(structref.StructRefProxy):
    """The arrays of one runtime's quote path (no copies: the feature engine's own state, the
    compiled ensemble's pack and the per-phase LSTM rings), in ``FIELDS`` order."""


FIELDS = (
    "iprog", "fprog", "state", "core", "clock", "values", "no_summary",  # the feature engine
    "columns", "x",  # the model's row, gathered from the values
    "members", "weights", "layout", "i32", "f32", "f64",  # the ensemble's pack
    "rings", "ring_states", "status",  # per phase, the LSTM ring and its state; the phase
)  # fmt: skip
structref.define_proxy(QuoteKernel, QuoteKernelType, list(FIELDS))


@njit(cache=True, error_model="numpy")
def gather_row(values, columns, x):
    """``x[:] = values[columns]``; True when every one of ``values`` is finite."""
    for j in range(columns.shape[0]):
        x[j] = values[columns[j]]
    for v in values:
        if not math.isfinite(v):
            return False
    return True


@njit(cache=True, error_model="numpy")
def quote_tick(k, ts_ns, bid, bid_qty, ask, ask_qty):
    """The quote into the features, then ``model_row``."""
    step(k.iprog, k.fprog, k.state, k.core, k.clock, ts_ns, KIND_QUOTE, _NAN, _NAN, 0.0, bid, bid_qty, ask,
         ask_qty, k.no_summary, k.values)  # fmt: skip
    return model_row(k)


@njit(cache=True, error_model="numpy")
def model_row(k):
    """(P(up), every feature value finite): the model's row gathered from the values, the phase
    advanced and P(up) from that phase's ring. P(up) is NaN before the first finite row (no
    phase yet, nothing pushed)."""
    x = k.x
    finite = gather_row(k.values, k.columns, x)
    status = k.status
    last = status[PHASE]
    if last < 0 and not finite:  # before compute_signals' first row: no probability yet
        return _NAN, False
    phase = last + 1
    if phase == k.rings.shape[0]:
        phase = 0
    status[PHASE] = phase
    p = ensemble_proba(k.members, k.weights, k.layout, k.i32, k.f32, k.f64, x, k.rings[phase], k.ring_states[phase])
    return p, finite


def bind(kernel: QuoteKernel):  # noqa: ANN201
    """``(quote_tick, model_row)`` compiled (or loaded from numba's cache) for this kernel's
    types, called without the dispatcher's type resolution."""
    kind = numba.typeof(kernel)
    return quote_tick.compile((kind, types.int64, *(types.float64,) * 4)), model_row.compile((kind,))


def new_kernel(arrays: dict[str, np.ndarray]) -> QuoteKernel:
    """A kernel over ``arrays`` (every name of ``FIELDS``; used as they are, not copied)."""
    missing = [name for name in FIELDS if name not in arrays]
    if missing:
        raise ValueError(f"quote kernel arrays missing: {', '.join(missing)}")
    return QuoteKernel(*(arrays[name] for name in FIELDS))
