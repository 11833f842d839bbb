"""The pure-function part of a backtest, computed once over the whole replay: features at every
quote update and the ensemble's P(up) there.

Both are pure functions of the event stream, so batching them changes nothing (DESIGN: "batch
the parts that are pure functions of the data"): the features come from the same compiled step as
the online engine (parity-tested), and the probabilities equal tick-by-tick inference:

- logistic regression, random forest and XGBoost read one row: row by row or in a batch is the
  same arithmetic;
- the LSTM reads the last ``window`` rows *of its sampling grid*. Training rows are every
  ``stride``-th quote update, so the model learned windows spaced ``stride`` quotes apart. At
  quote ``j`` the window is quotes ``j, j - stride, ...``: quotes split into ``stride`` interleaved
  phases, and each phase is one time-ordered sequence for ``Ensemble.predict_proba``. A live ring
  buffer per phase computes the same (``tick_by_tick_p_up`` is that reference; a test compares).

Rows before every feature is warm carry NaN features and ``ok = False``: the engine neither trades
nor trusts the model on them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.features.core import KIND_QUOTE
from pipeline.features.engine import run_program, warm_mask
from pipeline.features.catalog import compile_program
from pipeline.features.events import EventArrays


@dataclass(frozen=True)
class Signals:
    names: tuple[str, ...]  # columns of ``features``
    quote_index: np.ndarray  # event index of each row (every quote update)
    features: np.ndarray  # [rows, names], NaN before warm
    p_up: np.ndarray  # [rows], NaN where there is no model or it is not warm
    ok: np.ndarray  # [rows] bool: features warm and a probability present
    pending: Pipelined | None = None  # filling ``p_up`` / ``ok`` in the background (``pipelined=True``)

    def chunks(self) -> Iterator[tuple[int, int, list, list]]:
        """(first row, end row, P(up), ok) in row order, as Python lists for the replay loop; with
        ``pending``, each as soon as the background thread has computed it."""
        if self.pending is None:
            yield 0, len(self.ok), self.p_up.tolist(), self.ok.tolist()
        else:
            yield from self.pending.chunks(self.p_up, self.ok)


class Pipelined:
    """The ensemble's probabilities computed chunk by chunk in a thread while the replay loop runs.

    The model libraries release the GIL while they compute (scikit-learn's tree traversal,
    XGBoost, torch, numpy), so on two cores inference overlaps with the pure-Python loop. Each chunk
    is computed with enough rows before it for every LSTM window to be whole, starting on the
    sampling grid, so its values are those of one batch over everything (a test compares)."""

    def __init__(self, ensemble: Any, X: np.ndarray, warm: np.ndarray, first: int, stride: int,
                 from_row: int = 0, chunk_rows: int = 65_536) -> None:  # fmt: skip
        window = int(getattr(ensemble.members.get("lstm"), "params", {}).get("window", 1))
        self._context = stride * max(window - 1, 0)
        self._chunk = max(stride, chunk_rows // stride * stride)
        self._first, self._stride = first, stride
        # Rows before ``from_row`` (warm-up history before the window) are never read: not computed.
        self._skip = max(0, from_row - first) // stride * stride
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self._thread = threading.Thread(target=self._work, args=(ensemble, X, warm), daemon=True,
                                        name="backtest-inference")  # fmt: skip
        self._out: tuple[np.ndarray, np.ndarray] | None = None
        self._X_rows = len(X)

    def start(self, p_up: np.ndarray, ok: np.ndarray) -> Pipelined:
        self._out = (p_up, ok)
        self._thread.start()
        return self

    def _work(self, ensemble: Any, X: np.ndarray, warm: np.ndarray) -> None:
        p_up, ok = self._out
        try:
            for a in range(self._skip, len(X), self._chunk):
                b = min(a + self._chunk, len(X))
                lo = max(0, a - self._context)
                p = batch_p_up(ensemble, X[lo:b], self._stride)[a - lo:]
                rows = slice(self._first + a, self._first + b)
                p_up[rows] = p
                ok[rows] = warm[rows] & np.isfinite(p)
                self._queue.put((self._first + a, self._first + b))
            self._queue.put(None)
        except BaseException as exc:  # handed to the loop, which raises it
            self._queue.put(exc)

    def chunks(self, p_up: np.ndarray, ok: np.ndarray) -> Iterator[tuple[int, int, list, list]]:
        head = self._first + self._skip
        if head:
            yield 0, head, p_up[:head].tolist(), ok[:head].tolist()
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            lo, hi = item
            yield lo, hi, p_up[lo:hi].tolist(), ok[lo:hi].tolist()


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
                    stride: int, pipelined: bool = False, from_event: int = 0) -> Signals:  # fmt: skip
    """Features for the engine (``engine_names``) plus the model's inputs, and P(up) at each quote;
    ``pipelined``: the probabilities are computed in the background while they are consumed, only
    from the quote at or after event ``from_event`` on (the rows before stay NaN)."""
    model_names = tuple(ensemble.feature_names) if ensemble is not None else ()
    names = tuple(dict.fromkeys((*engine_names, *model_names)))
    quote_index, values, warm = feature_rows(events, names)
    p_up = np.full(len(quote_index), np.nan)
    if ensemble is None or not warm.any():
        return Signals(names, quote_index, values, p_up, warm if ensemble is None else np.zeros_like(warm))
    columns = [names.index(n) for n in model_names]
    first = int(np.argmax(warm))
    X = np.ascontiguousarray(values[first:, columns])
    if pipelined:
        ok = np.zeros_like(warm)
        from_row = int(np.searchsorted(quote_index, from_event))
        pending = Pipelined(ensemble, X, warm, first, stride, from_row).start(p_up, ok)
        return Signals(names, quote_index, values, p_up, ok, pending)
    p_up[first:] = batch_p_up(ensemble, X, stride)
    return Signals(names, quote_index, values, p_up, warm & np.isfinite(p_up))


def batch_p_up(ensemble: Any, X: np.ndarray, stride: int) -> np.ndarray:
    """P(up) for every row of ``X`` (consecutive quotes), each phase of the sampling grid as one sequence."""
    out = np.empty(len(X))
    for phase in range(min(stride, len(X))):
        out[phase::stride] = ensemble.predict_proba(X[phase::stride])
    return out


def tick_by_tick_p_up(ensemble: Any, X: np.ndarray, stride: int, row: int, window: int) -> float:
    """The reference: what a live model holding the last ``window`` rows of this row's phase computes."""
    phase_rows = X[row % stride : row + 1 : stride]
    return float(ensemble.predict_proba(phase_rows[-window:])[-1])
