"""Purged walk-forward splits: time order, no label window reaching validation, embargo >= horizon."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.training.splits import SplitError, label_ends, purged_halves, purged_walk_forward

SECOND = 1_000_000_000


def irregular_rows(n: int = 5000, seed: int = 0):
    """Rows at irregular times (bursts and lulls) with label windows of varying length (barrier touches)."""
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.exponential(0.5 * SECOND, n).astype(np.int64))
    exit_ts = ts + (rng.random(n) * 120 * SECOND).astype(np.int64)
    return ts, exit_ts


@pytest.mark.parametrize("use_horizon", [False, True])
def test_no_training_label_window_reaches_its_validation_period(use_horizon):
    ts, exit_ts = irregular_rows()
    kwargs = {"horizon_ns": 120 * SECOND} if use_horizon else {"label_end_ns": exit_ts}
    folds = purged_walk_forward(ts, folds=4, **kwargs)
    ends = label_ends(ts, **kwargs)
    assert len(folds) == 4
    for fold in folds:
        validation_start, validation_end = ts[fold.validation[0]], ts[fold.validation[-1]]
        # label windows [ts, end] of training rows never intersect [validation_start, validation_end]
        assert np.all((ends[fold.train] < validation_start) | (ts[fold.train] > validation_end))
        assert not np.intersect1d(fold.train, fold.validation).size
        assert fold.purged > 0  # windows do reach forward: the purge has work to do


def test_embargo_defaults_to_the_horizon_and_cannot_be_shorter():
    ts, exit_ts = irregular_rows()
    horizon = int(np.max(exit_ts - ts))
    for fold in purged_walk_forward(ts, folds=3, label_end_ns=exit_ts):
        assert ts[fold.validation[0]] - ts[fold.train[-1]] > horizon
    longer = 600 * SECOND
    for fold in purged_walk_forward(ts, folds=3, label_end_ns=exit_ts, embargo_ns=longer):
        assert ts[fold.validation[0]] - ts[fold.train[-1]] > longer
        assert fold.embargoed > 0
    with pytest.raises(SplitError, match="shorter than the label horizon"):
        purged_walk_forward(ts, folds=3, label_end_ns=exit_ts, embargo_ns=horizon - 1)


def test_folds_walk_forward_in_time_with_expanding_training():
    ts, exit_ts = irregular_rows()
    folds = purged_walk_forward(ts, folds=4, label_end_ns=exit_ts)
    for fold in folds:
        assert np.all(np.diff(fold.train) > 0) and np.all(np.diff(fold.validation) == 1)
        assert fold.train[-1] < fold.validation[0]
    for earlier, later in zip(folds, folds[1:]):
        assert earlier.validation[-1] < later.validation[0]
        assert earlier.validation_end_ns < later.validation_start_ns
        assert len(earlier.train) < len(later.train)
        assert set(earlier.train) <= set(later.train)
    assert folds[-1].validation[-1] == len(ts) - 1
    # validation blocks tile the data after the first block
    assert sum(len(f.validation) for f in folds) == len(ts) - len(ts) // 5


def test_bad_inputs_fail_with_a_reason():
    ts, exit_ts = irregular_rows(200)
    with pytest.raises(SplitError, match="time order"):
        purged_walk_forward(ts[::-1], folds=2, label_end_ns=exit_ts[::-1])
    with pytest.raises(SplitError, match="fewer than 150"):
        purged_walk_forward(ts, folds=4, label_end_ns=exit_ts, min_train_rows=150)
    with pytest.raises(SplitError, match="label_end_ns .* or horizon_ns"):
        purged_walk_forward(ts, folds=2)
    with pytest.raises(SplitError, match="ends before"):
        purged_walk_forward(ts, folds=2, label_end_ns=ts - 1)


def test_purged_halves_keep_early_stopping_labels_out_of_the_scored_half():
    ts, exit_ts = irregular_rows()
    fold = purged_walk_forward(ts, folds=2, label_end_ns=exit_ts)[0]
    early, scored = purged_halves(fold.validation, ts, exit_ts)
    assert np.all(exit_ts[early] < ts[scored[0]])
    assert early[-1] < scored[0] and scored[-1] == fold.validation[-1]
    assert 0 < len(early) < len(fold.validation) // 2
