"""Purged walk-forward splits with an embargo (López de Prado, *Advances in Financial ML*, ch. 7).

Rows are in time order (``ts_ns`` non-decreasing) and are never shuffled. The rows are cut into
``folds + 1`` consecutive blocks of equal row count; fold ``j`` validates on block ``j + 1`` and
trains on the rows before it (an expanding window), keeping only training rows that

- **purge**: have a label window ``[ts_ns, label_end_ns]`` ending strictly before the first
  validation timestamp (a row whose outcome is decided inside the validation period would leak it);
- **embargo**: have ``ts_ns < validation start - embargo_ns``, with ``embargo_ns`` at least the
  label horizon (the features of rows just before the validation period share their look-back, and
  with ``horizon_events`` the realised horizon varies row by row).

``label_end_ns`` is the exit time of each label (``Labels.exit_ts_ns``: the barrier touch or the
time barrier), or, with only a horizon, ``ts_ns + horizon_ns`` (the latest it can be).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import AutoscalpError


class SplitError(AutoscalpError):
    """Too few rows for the requested folds, or inputs that are not in time order."""


@dataclass(frozen=True)
class Fold:
    train: np.ndarray  # int64 row indices, increasing
    validation: np.ndarray  # int64 row indices, increasing and contiguous
    validation_start_ns: int
    validation_end_ns: int
    purged: int  # training rows dropped because their label window reached the validation period
    embargoed: int  # further rows dropped by the embargo

    def to_dict(self) -> dict:
        return {"train_rows": len(self.train), "validation_rows": len(self.validation),
                "validation_start_ns": self.validation_start_ns, "validation_end_ns": self.validation_end_ns,
                "purged": self.purged, "embargoed": self.embargoed}


def label_ends(ts_ns: np.ndarray, label_end_ns: np.ndarray | None = None, horizon_ns: int | None = None) -> np.ndarray:
    """Each row's label end: ``label_end_ns`` if given, else ``ts_ns + horizon_ns``."""
    ts_ns = np.asarray(ts_ns, dtype=np.int64)
    if label_end_ns is not None:
        ends = np.asarray(label_end_ns, dtype=np.int64)
        if ends.shape != ts_ns.shape:
            raise SplitError(f"label_end_ns has {ends.shape} values for {ts_ns.shape} rows")
        if np.any(ends < ts_ns):
            raise SplitError("a label ends before its row's timestamp")
        return ends
    if horizon_ns is None:
        raise SplitError("give label_end_ns (the label exit times) or horizon_ns")
    return ts_ns + int(horizon_ns)


def purged_walk_forward(
    ts_ns: np.ndarray,
    *,
    folds: int,
    label_end_ns: np.ndarray | None = None,
    horizon_ns: int | None = None,
    embargo_ns: int | None = None,
    min_train_rows: int = 1,
) -> list[Fold]:
    """Walk-forward folds in time order, purged and embargoed (see the module docstring).

    ``embargo_ns`` defaults to the label horizon: ``horizon_ns`` or, with only ``label_end_ns``,
    the longest label window; a smaller one is refused.
    """
    ts_ns = np.asarray(ts_ns, dtype=np.int64)
    n = len(ts_ns)
    if folds < 1:
        raise SplitError(f"folds must be >= 1, got {folds}")
    if np.any(np.diff(ts_ns) < 0):
        raise SplitError("rows must be in time order (ts_ns non-decreasing); they are never shuffled")
    ends = label_ends(ts_ns, label_end_ns, horizon_ns)
    horizon = int(horizon_ns) if horizon_ns is not None else int(np.max(ends - ts_ns, initial=0))
    if embargo_ns is None:
        embargo_ns = horizon
    if embargo_ns < horizon:
        raise SplitError(f"embargo {embargo_ns} ns is shorter than the label horizon {horizon} ns")
    if n < 2 * (folds + 1):
        raise SplitError(f"{n} rows are too few for {folds} walk-forward folds")
    bounds = [n * b // (folds + 1) for b in range(folds + 2)]
    result = []
    for j in range(folds):
        lo, hi = bounds[j + 1], bounds[j + 2]
        start_ns, end_ns = int(ts_ns[lo]), int(ts_ns[hi - 1])
        before = np.arange(lo)
        not_leaking = ends[before] < start_ns
        embargo_ok = ts_ns[before] < start_ns - embargo_ns
        train = before[not_leaking & embargo_ok]
        if len(train) < min_train_rows:
            raise SplitError(
                f"fold {j}: {len(train)} training rows after purge and embargo, fewer than {min_train_rows} "
                f"({n} rows, {folds} folds, embargo {embargo_ns / 1e9:g} s)"
            )
        result.append(Fold(
            train=train, validation=np.arange(lo, hi), validation_start_ns=start_ns, validation_end_ns=end_ns,
            purged=int(np.sum(~not_leaking)), embargoed=int(np.sum(not_leaking & ~embargo_ok)),
        ))
    return result


def purged_halves(rows: np.ndarray, ts_ns: np.ndarray, label_end_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a validation block in two, in time order: the first half (early stopping and
    calibration) loses the rows whose label window reaches the second half (scoring)."""
    rows = np.asarray(rows)
    first, second = rows[: len(rows) // 2], rows[len(rows) // 2:]
    if len(second) == 0:
        return first, second
    return first[np.asarray(label_end_ns)[first] < np.asarray(ts_ns)[second[0]]], second
