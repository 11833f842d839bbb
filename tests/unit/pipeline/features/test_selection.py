"""Feature selection: mutual information on purged walk-forward training folds, stability, pruning."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from pipeline.config import SelectionConfig, WarmupBudgetConfig
from pipeline.errors import AutoscalpError
from pipeline.features.catalog import catalog
from pipeline.features.selection import (
    METHOD, SelectionError, binned_mutual_information, eligible_candidates, fits_budget, load_selection,
    prune_correlated, save_selection, select, selection_history, walk_forward_training_folds,
)

BUDGET = WarmupBudgetConfig()
SECOND = 10**9
# Candidate names that fit the default budget, used as column names of made-up data.
INFORMATIVE, COPY, WEAK, LATE, CONSTANT = "ofi_tick_50", "ofi_tick_50_z200", "rv_tick_20", "tsi_tick_50", "bookimb_l1"
NOISE = ["ret_tick_5", "ret_tick_10", "rsi_tick_20", "bbz_tick_20", "spread_tick_20", "iat_tick_20"]


def made_up_rows(n: int = 6000, seed: int = 0) -> pd.DataFrame:
    """Labels driven by a latent signal. INFORMATIVE sees it, COPY is a monotone copy of
    INFORMATIVE, WEAK sees it through much noise, LATE sees it only in the last 20 % of rows
    (the validation block selection never sees), CONSTANT never changes, NOISE is unrelated."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    label = np.where(signal > 0.6, 1, np.where(signal < -0.6, -1, 0))
    ts = np.arange(n, dtype=np.int64) * SECOND
    late = rng.normal(size=n)
    late[int(0.8 * n):] = signal[int(0.8 * n):]
    frame = pd.DataFrame({
        "ts_ns": ts,
        INFORMATIVE: signal + 0.3 * rng.normal(size=n),
        WEAK: signal + 3.0 * rng.normal(size=n),
        LATE: late,
        CONSTANT: np.full(n, 0.5),
        **{name: rng.normal(size=n) for name in NOISE},
        "label": label.astype(np.int8),
        "exit_ts_ns": ts + 30 * SECOND,
    })
    frame[COPY] = np.exp(frame[INFORMATIVE])  # Spearman 1 with INFORMATIVE
    return frame


CANDIDATES = [INFORMATIVE, COPY, WEAK, LATE, CONSTANT, *NOISE]


def test_keeps_the_informative_drops_copies_constants_and_what_only_the_unseen_block_shows():
    frame = made_up_rows()
    selection = select(frame, CANDIDATES, SelectionConfig(count=3, folds=3), BUDGET, dataset="d1")
    assert selection.names[:2] == (INFORMATIVE, WEAK)
    assert COPY not in selection.names and CONSTANT not in selection.names and LATE not in selection.names
    ranking = selection.ranking.set_index("name")
    assert ranking.loc[COPY, "pruned_by"] == INFORMATIVE
    assert ranking.loc[INFORMATIVE, "score"] > 0.3 > 0.02 > ranking.loc[LATE, "score"]
    assert ranking.loc[CONSTANT, "score"] == 0.0
    assert selection.method == METHOD and selection.dataset == "d1"
    assert len(selection.fold_ranks) == 3 and all(len(r) == 3 for r in selection.fold_ranks)
    assert selection.fold_ranks[0][0] <= 2  # informative is top-2 on every fold (with its copy)


def test_is_deterministic_and_the_id_follows_the_inputs():
    frame = made_up_rows()
    config = SelectionConfig(count=4, folds=3, max_rows=1000)  # subsampled: the seed matters
    first = select(frame, CANDIDATES, config, BUDGET, dataset="d1")
    again = select(frame.sample(frac=1.0, random_state=1), CANDIDATES, config, BUDGET, dataset="d1")
    assert first == again and first.id == again.id
    assert select(frame, CANDIDATES, config, BUDGET, dataset="d2").id != first.id
    assert select(frame, CANDIDATES, SelectionConfig(count=4, folds=3, seed=8), BUDGET, "d1").id != first.id


def test_training_folds_expand_and_are_purged_before_their_validation_block():
    frame = made_up_rows(1000)
    ts, exit_ts = frame["ts_ns"].to_numpy(), frame["exit_ts_ns"].to_numpy()
    folds, split = walk_forward_training_folds(ts, exit_ts, SelectionConfig(folds=4))
    assert split["embargo_ns"] == 30 * SECOND
    assert split["unseen_from_ns"] == ts[800]  # the last of 5 blocks
    assert [len(f) for f in folds] == [170, 370, 570, 770] == split["fold_rows"]
    for fold, block_start in zip(folds, (200, 400, 600, 800)):
        assert fold[0] == 0 and np.all(np.diff(fold) == 1)
        assert exit_ts[fold].max() < ts[block_start]  # no training label reaches the block after


def test_too_few_rows_for_the_folds_is_a_clear_error():
    with pytest.raises(AutoscalpError, match="fold 0: 0 training rows after purge and embargo, fewer than 50"):
        select(made_up_rows(150), CANDIDATES, SelectionConfig(folds=4), BUDGET)


def test_candidates_beyond_the_warmup_budget_never_compete():
    frame = made_up_rows()
    tight = WarmupBudgetConfig(quotes=100, trades=100, events=100, seconds=1.0)
    assert not fits_budget(catalog()[INFORMATIVE], tight)  # ofi_tick_50: ~200 quotes
    selection = select(frame, CANDIDATES, SelectionConfig(count=3, folds=2), tight)
    assert INFORMATIVE not in selection.names and selection.params["candidates"] < len(CANDIDATES)
    with pytest.raises(SelectionError, match="dataset has no column"):
        select(frame.drop(columns=[WEAK]), CANDIDATES, SelectionConfig(folds=2), BUDGET)


def test_eligible_candidates_fit_the_budget_and_a_huge_budget_admits_all():
    eligible = eligible_candidates(BUDGET)
    assert 500 < len(eligible) < len(catalog())
    assert all(fits_budget(catalog()[n], BUDGET) for n in eligible)
    huge = WarmupBudgetConfig(quotes=10**9, trades=10**9, events=10**9, seconds=1e9, moves=10**9, depth=10**9)
    assert eligible_candidates(huge) == list(catalog())
    without_depth = eligible_candidates(huge, depth=False)
    assert without_depth == [n for n, spec in catalog().items() if not spec.family.is_depth]
    assert len(without_depth) == 1284 and len(catalog()) == 1476


def test_a_candidate_with_nan_in_any_row_never_competes():
    frame = made_up_rows()
    frame.loc[frame.index[::50], INFORMATIVE] = np.nan  # e.g. a depth feature on days without depth
    selection = select(frame, CANDIDATES, SelectionConfig(count=3, folds=2), BUDGET)
    assert INFORMATIVE not in selection.names and INFORMATIVE not in set(selection.ranking["name"])
    assert selection.params["candidates"] == len(CANDIDATES) - 1


def test_binned_mutual_information():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 20_000)
    x = np.column_stack([
        y + 0.0,  # the label itself: MI = H(y) = log2(3)
        rng.normal(size=len(y)),  # independent: ~0 (plug-in bias only)
        np.full(len(y), 7.0),  # constant: exactly 0
        np.exp(y + 0.0),  # a monotone transform of the label: the same as the label
        np.where(y == 0, np.nan, y),  # NaN in a bin of its own: still all of the label
    ]).astype(np.float32)
    mi = binned_mutual_information(np.asfortranarray(x), y, 3, 16)
    assert mi[0] == pytest.approx(np.log2(3), abs=0.01)
    assert mi[1] < 0.005
    assert mi[2] == 0.0
    assert mi[3] == pytest.approx(mi[0]) and mi[4] == pytest.approx(mi[0])


def test_pruning_skips_near_copies_and_constants():
    rng = np.random.default_rng(1)
    a = rng.normal(size=500)
    noise = rng.normal(size=(2, 500))
    ordered = pd.DataFrame({"a": a, "a2": a + 0.01 * noise[0], "k": np.ones(500), "b": noise[1]})
    kept, pruned_by = prune_correlated(ordered, count=5, max_abs_spearman=0.9)
    assert kept == ["a", "b"] and pruned_by == {"a2": "a", "k": "constant"}
    assert prune_correlated(ordered, count=1, max_abs_spearman=0.9)[0] == ["a"]
    assert prune_correlated(ordered, count=5, max_abs_spearman=1.0)[0] == ["a", "a2", "b"]


def test_saved_selection_loads_back_and_the_history_grows_once_per_selection(tmp_path):
    frame = made_up_rows()
    first = select(frame, CANDIDATES, SelectionConfig(count=3, folds=2), BUDGET, dataset="d1")
    path = save_selection(first, tmp_path)
    assert load_selection(path) == first
    assert load_selection(tmp_path / "selection.json").names == first.names
    save_selection(first, tmp_path)  # the same selection again: recorded once
    second = select(frame.iloc[:4000], CANDIDATES, SelectionConfig(count=3, folds=2), BUDGET, dataset="d2")
    save_selection(second, tmp_path)
    history = selection_history(tmp_path)
    assert history.groupby("selection_id").size().to_dict() == {first.id: len(CANDIDATES), second.id: len(CANDIDATES)}
    assert set(history.loc[history["selected"], "name"]) >= set(first.names)
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(SelectionError, match="no feature selection"):
        load_selection(tmp_path / "missing.json")


@pytest.mark.slow
def test_selection_of_25_from_all_candidates_on_50k_rows_is_fast():
    rng = np.random.default_rng(2)
    names = list(catalog())
    n = 50_000
    signal = rng.normal(size=n)
    data = rng.normal(size=(n, len(names))).astype(np.float32)
    data[:, ::50] += signal[:, None].astype(np.float32)  # every 50th candidate carries the signal
    frame = pd.DataFrame(data, columns=names)
    frame["ts_ns"] = np.arange(n, dtype=np.int64) * SECOND
    frame["exit_ts_ns"] = frame["ts_ns"] + 60 * SECOND
    frame["label"] = np.where(signal > 0.6, 1, np.where(signal < -0.6, -1, 0)).astype(np.int8)
    huge = WarmupBudgetConfig(quotes=10**9, trades=10**9, events=10**9, seconds=1e9, moves=10**9, depth=10**9)
    started = time.perf_counter()
    selection = select(frame, names, SelectionConfig(), huge)
    elapsed = time.perf_counter() - started
    assert len(selection.names) == 25
    assert all(names.index(n) % 50 == 0 for n in selection.names)  # only signal carriers (< 0.9 correlated)
    assert elapsed < 45, f"selection took {elapsed:.1f} s"
