"""The whole ensemble in one numba call per tick: the members' arrays packed into three buffers.

Each array argument costs ~30 ns to unbox on every call, so the members' ~30 arrays are packed
by dtype into three flat buffers (int32, float32, float64) with an int64 ``layout`` (one row per
array: buffer, offset, shape) and a ``members`` table (kind, first layout row). Inside the call
each array is a view of its buffer (no copy, no allocation) handed to the member's evaluator, so
the ensemble runs the same code as the single-model evaluators. The probability is the weighted
sum of the members' calibrated probabilities, in members' order (``Ensemble.predict_proba``).

Per tick (live)::

    compiled = CompiledEnsemble(load_compiled(path))      # or CompiledEnsemble(export_ensemble(e))
    p_up = compiled.proba_tick(x_row)                      # pushes x_row into the LSTM's ring

Batch (backtest): ``compiled.proba_batch(X)`` gives, bit for bit, what the per-tick path gives
over X's rows from a fresh ring, which is what ``Ensemble.predict_proba(X)`` computes (within the
fidelity bounds: the LSTM's state carried from X's first row, or its first window padded with
that row); the members' batch evaluators run the per-tick kernels row after row, without a call
per row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
from numba import njit

from pipeline.models.compiled.evaluators import (
    RING_ROWS,
    calibrate,
    logistic_proba,
    logistic_proba_batch,
    lstm_carried_proba,
    lstm_carried_proba_batch,
    lstm_proba_batch,
    lstm_push,
    lstm_window_proba,
    new_lstm_ring,
    xgb_sigmoid,
)
from pipeline.models.compiled.export import MEMBER_ARRAYS, check_member_arrays
from pipeline.models.compiled.walks import (
    forest_proba_batch,
    forest_raw_walk,
    group_depths,
    walk_table,
    xgb_margin_walk,
    xgb_proba_batch,
)

LOGISTIC, FOREST, XGB, LSTM = 0, 1, 2, 3
KIND_CODES = {"logistic": LOGISTIC, "forest": FOREST, "xgb": XGB, "lstm": LSTM}
BUFFERS = {np.dtype(np.int32): 0, np.dtype(np.float32): 1, np.dtype(np.float64): 2}
MAX_DIMS = 3


@dataclass(frozen=True)
class Pack:
    members: np.ndarray  # int64 [M, 2]: kind code, first layout row
    weights: np.ndarray  # float64 [M]
    layout: np.ndarray  # int64 [arrays, 2 + MAX_DIMS]: buffer, offset, shape (1-padded)
    i32: np.ndarray
    f32: np.ndarray
    f64: np.ndarray

    def arrays(self) -> tuple[np.ndarray, ...]:
        return self.members, self.weights, self.layout, self.i32, self.f32, self.f64


def tick_arrays(kind: str, arrays: Mapping[str, np.ndarray], n_features: int) -> dict[str, np.ndarray]:
    """A member's arrays as the per-tick call takes them, in its argument order: the trees' node
    table and thresholds as one walk table (walks.walk_table; a forest's thresholds are in it and
    not passed again) and their groups' depths after the exported arrays."""
    tick = {name: arrays[name] for name in MEMBER_ARRAYS[kind]}
    if kind in ("forest", "xgb"):
        tick["group_depth"] = group_depths(arrays["nodes"], arrays["roots"])
        thresholds = tick.pop("thresholds") if kind == "forest" else arrays["values"]
        tick["nodes"] = walk_table(arrays["nodes"], thresholds, n_features)
    return tick


def pack(exported: Mapping[str, Any]) -> Pack:
    """Pack ``export_ensemble``'s (or ``load_compiled``'s) arrays, members in the header's order."""
    parts: dict[int, list[np.ndarray]] = {0: [], 1: [], 2: []}
    sizes = [0, 0, 0]
    members, weights, layout = [], [], []
    for member in exported["header"]["members"]:
        arrays = tick_arrays(member["kind"], exported["arrays"][member["name"]], exported["header"]["n_features"])
        members.append((KIND_CODES[member["kind"]], len(layout)))
        weights.append(member["weight"])
        for name in arrays:  # the evaluator's argument order
            array = arrays[name]
            buffer = BUFFERS[array.dtype]
            shape = list(array.shape) + [1] * (MAX_DIMS - array.ndim)
            layout.append([buffer, sizes[buffer], *shape])
            parts[buffer].append(array.ravel())
            sizes[buffer] += array.size
    buffers = [np.concatenate(parts[b]) if parts[b] else np.zeros(0) for b in range(3)]
    return Pack(np.array(members, dtype=np.int64), np.array(weights, dtype=np.float64),
                np.array(layout, dtype=np.int64), buffers[0].astype(np.int32), buffers[1].astype(np.float32),
                buffers[2].astype(np.float64))


@njit(cache=True, error_model="numpy")
def _v1(buffer, layout, row):
    start = layout[row, 1]
    return buffer[start:start + layout[row, 2]]


@njit(cache=True, error_model="numpy")
def _v2(buffer, layout, row):
    start, d0, d1 = layout[row, 1], layout[row, 2], layout[row, 3]
    return buffer[start:start + d0 * d1].reshape((d0, d1))


@njit(cache=True, error_model="numpy")
def _v3(buffer, layout, row):
    start, d0, d1, d2 = layout[row, 1], layout[row, 2], layout[row, 3], layout[row, 4]
    return buffer[start:start + d0 * d1 * d2].reshape((d0, d1, d2))


@njit(cache=True, error_model="numpy")
def ensemble_proba(members, weights, layout, i32, f32, f64, x, ring, ring_state):
    """P(up) of the ensemble for one row ``x`` (float64 [features]); pushes ``x`` into the LSTM ring.
    The ring's last ``features + 1`` floats hold the row in float32 for the tree walks (the last
    one -inf: the leaves' self-loop, walks.walk_table)."""
    k = x.shape[0]
    xf = ring[ring.shape[0] - k - 1:]
    finite = True
    for j in range(k):
        v = np.float32(x[j])
        xf[j] = v
        finite &= v == v
    xf[k] = -np.inf
    total = 0.0
    for m in range(members.shape[0]):
        kind, r = members[m, 0], members[m, 1]
        if kind == LOGISTIC:
            p = logistic_proba(_v1(f64, layout, r), _v1(f64, layout, r + 1), _v1(f64, layout, r + 2),
                               _v1(f64, layout, r + 3), _v1(f64, layout, r + 4), x)
        elif kind == FOREST:
            p = calibrate(_v1(f64, layout, r + 3),
                          forest_raw_walk(_v2(i32, layout, r), _v1(f64, layout, r + 1), _v1(i32, layout, r + 2),
                                          _v1(i32, layout, r + 4), xf, finite))
        elif kind == XGB:
            margin = xgb_margin_walk(_v2(i32, layout, r), _v1(f32, layout, r + 1), _v1(i32, layout, r + 2),
                                     _v1(i32, layout, r + 5), _v1(f32, layout, r + 3), xf, finite)
            p = calibrate(_v1(f64, layout, r + 4), np.float64(xgb_sigmoid(margin)))
        elif _v1(i32, layout, r + 11)[0] == 1:  # the LSTM, its state carried
            p = lstm_carried_proba(_v1(f64, layout, r), _v1(f64, layout, r + 1), _v2(f32, layout, r + 2),
                                   _v3(f32, layout, r + 3), _v3(f32, layout, r + 4), _v2(f32, layout, r + 5),
                                   _v2(f32, layout, r + 6), _v1(f32, layout, r + 7), _v1(f32, layout, r + 8),
                                   _v1(f64, layout, r + 9), ring, ring_state, x)
        else:  # the LSTM over its window
            b_ih = _v2(f32, layout, r + 5)
            lstm_push(_v1(f64, layout, r), _v1(f64, layout, r + 1), _v2(f32, layout, r + 2), b_ih[0],
                      ring, ring_state, x)
            p = lstm_window_proba(_v3(f32, layout, r + 3), _v3(f32, layout, r + 4), b_ih, _v2(f32, layout, r + 6),
                                  _v1(f32, layout, r + 7), _v1(f32, layout, r + 8), _v1(f64, layout, r + 9),
                                  ring, ring_state)
        total += weights[m] * p
    return total


def member_proba_batch(kind: str, arrays: Mapping[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    """One member's calibrated probabilities over X's rows (``model.predict_proba(X)``)."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    arrays = check_member_arrays(kind, dict(arrays))
    a = [arrays[name] for name in MEMBER_ARRAYS[kind]]
    if kind == "logistic":
        return logistic_proba_batch(*a, X)
    if kind in ("forest", "xgb"):
        nodes, thresholds = a[0], a[1]
        table = walk_table(nodes, thresholds, X.shape[1])
        if kind == "forest":
            return forest_proba_batch(table, *a[2:], nodes, X)
        return xgb_proba_batch(table, *a[1:], nodes, X)
    if int(arrays["carried"][0]) == 1:
        return lstm_carried_proba_batch(*a[:-2], X)
    return lstm_proba_batch(*a[:-2], int(arrays["window"][0]), X)


class CompiledEnsemble:
    """An exported ensemble ready to evaluate: per tick (``proba_tick``) or over a matrix (``proba_batch``)."""

    def __init__(self, exported: Mapping[str, Any]) -> None:
        self.header = exported["header"]
        self.arrays = exported["arrays"]
        self.pack = pack(exported)
        self.n_features = self.header["n_features"]
        lstm = [m["name"] for m in self.header["members"] if m["kind"] == "lstm"]
        self._ring_shape = (0, 1, 1)
        if lstm:
            arrays = self.arrays[lstm[0]]
            window = 1 if int(arrays["carried"][0]) == 1 else int(arrays["window"][0])  # carried: one row's slot
            self._ring_shape = (window, arrays["w_hh"].shape[1], arrays["w_hh"].shape[0])
        self.reset()
        self._arrays = self.pack.arrays()  # unpacked into every call: built once, not per tick
        example = (*self._arrays, np.zeros(self.n_features), self.ring, self.ring_state)
        self._tick = _bound(ensemble_proba, example)

    def reset(self) -> None:
        """Forget the LSTM's window: the next row starts a new stream (and is repeated as its padding)."""
        self.ring, self.ring_state = self.new_ring()

    def new_ring(self) -> tuple[np.ndarray, np.ndarray]:
        """An empty LSTM ring and its state, for another stream of rows (``proba_tick_in``). The
        serving runtime keeps one per phase of the sampling grid (serving.runtime.model). The
        ring ends with the row's float32 scratch for the tree walks."""
        ring, state = new_lstm_ring(*self._ring_shape)
        return np.concatenate([ring, np.full(self.n_features + 1, -np.inf, dtype=np.float32)]), state

    @property
    def rows_seen(self) -> int:
        return int(self.ring_state[RING_ROWS])

    def proba_tick(self, x: np.ndarray) -> float:
        """P(up) for the newest row ``x`` (float64, C-contiguous, ``n_features`` long): one compiled call."""
        return self._tick(*self._arrays, x, self.ring, self.ring_state)

    def proba_tick_in(self, x: np.ndarray, ring: np.ndarray, ring_state: np.ndarray) -> float:
        """``proba_tick`` with ``x`` pushed into ``ring`` (from ``new_ring``) instead of the own ring."""
        return self._tick(*self._arrays, x, ring, ring_state)

    def tick_call(self, x: np.ndarray, ring: np.ndarray, ring_state: np.ndarray) -> tuple[Any, tuple]:
        """``(fn, args)`` with ``fn(*args) == proba_tick_in(x, ring, ring_state)`` for whatever ``x``
        holds at the call: the compiled entry and its whole argument tuple, built once, so that a
        hot loop pays one call and no tuple building (~0.15 us less per tick)."""
        return self._tick, (*self._arrays, x, ring, ring_state)

    def proba_batch(self, X: np.ndarray) -> np.ndarray:
        """P(up) for each row of X in time order, the LSTM from a fresh ring (``Ensemble.predict_proba``).
        Each value is bit for bit what ``proba_tick`` gives for that row: the members' batch
        evaluators compute each row as their one-row ones do, and the weighted sum below runs in
        the same order with the same operations as ``ensemble_proba``'s."""
        probas = self.member_proba_batch(X)
        total = np.zeros(len(probas))
        for m, weight in enumerate(self.pack.weights):
            total += weight * probas[:, m]
        return total

    def member_proba_batch(self, X: np.ndarray) -> np.ndarray:
        """``[rows, members]`` calibrated probabilities (``Ensemble.member_probas``)."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must be [rows, {self.n_features}], got shape {X.shape}")
        return np.column_stack([member_proba_batch(m["kind"], self.arrays[m["name"]], X)
                                for m in self.header["members"]])


def _bound(dispatcher, example_args: tuple) -> Any:
    """The compiled entry point for these argument types, called without the dispatcher's per-call
    type resolution (as pipeline.features.engine binds ``step``)."""
    return dispatcher.compile(tuple(numba.typeof(a) for a in example_args))
