"""Feature selection: the candidates -> the ``count`` (default 25) the models see.

Method (``mutual_information_target_walk_forward``):

1. Only candidates whose declared warm-up fits the budget (``warmup_budget``) compete: one that needs
   hours of history would cost most rows of every dataset and every restart of the daemon. Nor do
   the depth features where the data has no L2 book (pipeline.features.dataset leaves them out),
   nor a candidate with a non-finite value in any row: NaN never reaches a model.
2. The rows are cut into ``folds + 1`` time blocks: the purged walk-forward split of training
   (pipeline.training.splits). Fold k trains on the blocks before block k + 1, purged (a row's
   label must end before the block) and embargoed by the longest label span. The last block is
   never seen by selection, so a model scored there is not flattered by features picked on it.
3. On each training fold (seeded subsample of at most ``max_rows``), every candidate's mutual
   information with the models' target (label == +1: the long take-profit is hit first) is
   estimated on ``bins`` quantile bins, and candidates are ranked. Scoring against the 3-class
   label instead rewarded "will the price move at all" (volatility, spread, activity) over
   direction, which the models are not asked. Mutual information sees non-monotone relations and needs no model; binned on
   quantiles it is invariant to each feature's scale and robust to heavy tails.
4. Candidates are ordered by their mean rank over folds (stable across time beats best once), then
   taken greedily, skipping any whose |Spearman| with an already kept one exceeds
   ``max_abs_spearman`` (a near-copy adds nothing but variance).

Everything is deterministic given the rows and the config.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from numba import njit

from pipeline.config import SelectionConfig, WarmupBudgetConfig
from pipeline.errors import AutoscalpError
from pipeline.features.catalog import FeatureSpec, catalog
from pipeline.features.store import fingerprint, write_json_atomic, write_parquet_atomic
from pipeline.training.splits import purged_walk_forward

METHOD = "mutual_information_target_walk_forward"  # renamed when the scored target changes: ids change
LABEL, EXIT_TS = "label", "exit_ts_ns"
MIN_FOLD_ROWS = 50


class SelectionError(AutoscalpError):
    pass


def fits_budget(spec: FeatureSpec, budget: WarmupBudgetConfig) -> bool:
    w = spec.warmup
    return (
        w.quotes <= budget.quotes and w.trades <= budget.trades and w.moves <= budget.moves
        and w.seconds <= budget.seconds and w.events + w.after_events <= budget.events
        and w.depth + w.after_depth <= budget.depth
    )


def eligible_candidates(budget: WarmupBudgetConfig, depth: bool = True) -> list[str]:
    """Every candidate whose declared warm-up fits the budget, in catalog order; without the
    depth features when ``depth`` is False (data without an L2 book: they would never warm)."""
    return [name for name, spec in catalog().items()
            if fits_budget(spec, budget) and (depth or not spec.family.is_depth)]


@dataclass(frozen=True)
class Selection:
    names: tuple[str, ...]  # the selected features, best first: what serving loads
    scores: tuple[float, ...]  # their mean mutual information with the target over folds, bits
    fold_ranks: tuple[tuple[float, ...], ...]  # per selected feature, its rank on each fold (1 = best)
    method: str
    params: dict  # the SelectionConfig, embargo, where the unseen block starts, fold ends and rows
    dataset: str  # fingerprint of the feature dataset it was computed on

    id: str  # selection_id() of its inputs: the same rows, candidates and config give the same id
    ranking: pd.DataFrame = field(repr=False, compare=False, default=None)  # every candidate (history)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("ranking")
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Selection:
        return cls(
            names=tuple(data["names"]),
            scores=tuple(data["scores"]),
            fold_ranks=tuple(tuple(r) for r in data["fold_ranks"]),
            method=data["method"],
            params=data["params"],
            dataset=data["dataset"],
            id=data["id"],
        )


def selection_id(
    dataset: str, candidates: list[str] | tuple[str, ...], config: SelectionConfig, budget: WarmupBudgetConfig
) -> str:
    return fingerprint({
        "dataset": dataset, "method": METHOD, "candidates": list(candidates),
        "config": config.model_dump(), "budget": budget.model_dump(),
    })


def select(
    frame: pd.DataFrame, candidates: list[str] | tuple[str, ...], config: SelectionConfig,
    budget: WarmupBudgetConfig, dataset: str = "",
) -> Selection:
    """Select ``config.count`` of ``candidates`` from labelled rows (``ts_ns``, the candidates,
    ``label``, ``exit_ts_ns``), on training folds only."""
    specs = catalog()
    names = [n for n in candidates if n in specs and fits_budget(specs[n], budget)]
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise SelectionError(f"the dataset has no column {missing[0]!r}: rebuild it with `autoscalp features build`")
    if not names:
        raise SelectionError("no candidate fits the warm-up budget (features.warmup_budget)")
    frame = frame.sort_values("ts_ns", kind="stable").reset_index(drop=True)
    folds, split = walk_forward_training_folds(frame["ts_ns"].to_numpy(), frame[EXIT_TS].to_numpy(), config)
    y = (frame[LABEL].to_numpy() == 1).astype(np.int64)  # the target pipeline.training fits
    # float32 halves the memory and the sorting time; quantile bins need no more precision.
    values = frame[names].to_numpy(np.float32)
    finite = np.isfinite(values).all(axis=0)
    if not finite.all():  # rows are warm, so this is a guard: a model must never see NaN
        names, values = [n for n, ok in zip(names, finite) if ok], values[:, finite]
        if not names:
            raise SelectionError("every candidate has non-finite values in the dataset")
    scores = np.empty((len(names), len(folds)))
    for k, rows in enumerate(folds):
        rows = _subsample(rows, config.max_rows, config.seed, k)
        scores[:, k] = binned_mutual_information(np.asfortranarray(values[rows]), y[rows], 2, config.bins)
    ranking = _rank(names, scores)
    last = _subsample(folds[-1], config.max_rows, config.seed, len(folds) - 1)
    kept, pruned_by = prune_correlated(frame.loc[last, ranking["name"]], config.count, config.max_abs_spearman)
    ranking["selected"] = ranking["name"].isin(kept)
    ranking["pruned_by"] = ranking["name"].map(pruned_by)
    chosen = ranking.set_index("name").loc[kept]
    fold_columns = [f"rank_fold{k}" for k in range(len(folds))]
    return Selection(
        names=tuple(kept),
        scores=tuple(float(s) for s in chosen["score"]),
        fold_ranks=tuple(tuple(float(r) for r in row) for row in chosen[fold_columns].to_numpy()),
        method=METHOD,
        params={**config.model_dump(), **split, "candidates": len(names)},
        dataset=dataset,
        id=selection_id(dataset, candidates, config, budget),
        ranking=ranking,
    )


def walk_forward_training_folds(
    ts_ns: np.ndarray, exit_ts_ns: np.ndarray, config: SelectionConfig
) -> tuple[list[np.ndarray], dict]:
    """The training rows (of time-sorted rows) of each purged walk-forward fold, and the split.

    The folds are the training pipeline's (pipeline.training.splits), so the last validation block
    is never seen by selection: a model scored there is not flattered by features picked on it."""
    folds = purged_walk_forward(ts_ns, folds=config.folds, label_end_ns=exit_ts_ns, min_train_rows=MIN_FOLD_ROWS)
    split = {
        "rows": len(ts_ns),
        "embargo_ns": int(np.max(exit_ts_ns - ts_ns, initial=0)),
        "unseen_from_ns": folds[-1].validation_start_ns,
        "fold_end_ns": [int(ts_ns[f.train[-1]]) for f in folds],
        "fold_rows": [len(f.train) for f in folds],
    }
    return [f.train for f in folds], split


def _subsample(rows: np.ndarray, max_rows: int, seed: int, fold: int) -> np.ndarray:
    if len(rows) <= max_rows:
        return rows
    return np.sort(np.random.default_rng([seed, fold]).choice(rows, size=max_rows, replace=False))


def _rank(names: list[str], scores: np.ndarray) -> pd.DataFrame:
    ranks = pd.DataFrame(scores).rank(ascending=False, method="average").to_numpy()
    ranking = pd.DataFrame({"name": names, "score": scores.mean(axis=1), "mean_rank": ranks.mean(axis=1)})
    for k in range(scores.shape[1]):
        ranking[f"rank_fold{k}"] = ranks[:, k]
        ranking[f"score_fold{k}"] = scores[:, k]
    # Ties (e.g. several uninformative candidates) break by name, so the order is reproducible.
    return ranking.sort_values(["mean_rank", "name"], kind="stable").reset_index(drop=True)


def prune_correlated(ordered: pd.DataFrame, count: int, max_abs_spearman: float) -> tuple[list[str], dict[str, str]]:
    """Take columns in order, skipping those too rank-correlated with a kept one, or constant.

    Returns the kept names and, for each skipped one, the kept feature it duplicates ("constant"
    for a feature with a single value)."""
    kept: list[str] = []
    kept_ranks = np.empty((len(ordered), 0))
    pruned_by: dict[str, str] = {}
    for name in ordered.columns:
        if len(kept) == count:
            break
        ranks = _standardised_ranks(ordered[name].to_numpy(np.float64))
        if ranks is None:
            pruned_by[name] = "constant"
            continue
        rho = np.abs(ranks @ kept_ranks) / len(ranks) if kept else np.zeros(0)
        if rho.size and rho.max() > max_abs_spearman:
            pruned_by[name] = kept[int(rho.argmax())]
            continue
        kept.append(name)
        kept_ranks = np.column_stack([kept_ranks, ranks])
    return kept, pruned_by


def _standardised_ranks(values: np.ndarray) -> np.ndarray | None:
    """Average ranks scaled to mean 0 and variance 1 (their dot product / n is Spearman's rho);
    non-finite values take the middle rank. None for a constant column."""
    ranks = pd.Series(values).rank(method="average").to_numpy()
    ranks = np.where(np.isfinite(ranks), ranks, np.nanmean(ranks) if np.isfinite(ranks).any() else 0.0)
    std = ranks.std()
    if not std > 0:
        return None
    return (ranks - ranks.mean()) / std


@njit(cache=True)
def binned_mutual_information(features, y, n_classes, bins):
    """Mutual information (bits) between each column of ``features`` ([n, k], column-major for
    speed) and the class codes ``y`` (0 .. n_classes-1), on ``bins`` quantile bins per column.

    Equal values always share a bin (so a constant column scores 0); non-finite values get a bin
    of their own. The plug-in estimate's bias, ~(bins - 1)(classes - 1) / (2 n ln 2), is the same
    for every column, so rankings are unaffected."""
    n, k = features.shape
    out = np.zeros(k)
    class_counts = np.zeros(n_classes)
    for i in range(n):
        class_counts[y[i]] += 1.0
    for j in range(k):
        column = features[:, j]
        finite = column[np.isfinite(column)]
        if finite.shape[0] == 0:
            continue
        ordered = np.sort(finite)
        edges = np.empty(bins - 1, dtype=ordered.dtype)
        for b in range(bins - 1):
            edges[b] = ordered[(b + 1) * (ordered.shape[0] - 1) // bins]
        counts = np.zeros((bins + 1, n_classes))
        for i in range(n):
            v = column[i]
            b = np.searchsorted(edges, v, side="right") if math.isfinite(v) else bins
            counts[b, y[i]] += 1.0
        mi = 0.0
        for b in range(bins + 1):
            row = counts[b].sum()
            for c in range(n_classes):
                if counts[b, c] > 0.0:
                    mi += counts[b, c] / n * math.log2(counts[b, c] * n / (row * class_counts[c]))
        out[j] = mi
    return out


# ---- persistence: the selection of a run, and the history of every run ------------------------


def save_selection(selection: Selection, features_dir: Path) -> Path:
    """Write the selection (selections/<id>.json and selection.json, the latest) and append its
    full ranking to selection_history.parquet once per selection id, for feature-evolution plots."""
    features_dir = Path(features_dir)
    path = features_dir / "selections" / f"{selection.id}.json"
    write_json_atomic(path, selection.to_dict())
    write_json_atomic(features_dir / "selection.json", selection.to_dict())
    history_path = features_dir / "selection_history.parquet"
    history = pd.read_parquet(history_path) if history_path.is_file() else None
    if selection.ranking is not None and (history is None or selection.id not in set(history["selection_id"])):
        rows = selection.ranking[["name", "score", "mean_rank", "selected"]].copy()
        rows.insert(0, "selection_id", selection.id)
        rows.insert(1, "dataset", selection.dataset)
        rows.insert(2, "recorded_at", pd.Timestamp.now(tz="UTC"))
        history = rows if history is None else pd.concat([history, rows], ignore_index=True)
        write_parquet_atomic(history_path, history)
    return path


def load_selection(path: Path) -> Selection:
    try:
        return Selection.from_dict(json.loads(Path(path).read_text()))
    except FileNotFoundError:
        raise SelectionError(f"{path}: no feature selection there; run `autoscalp features build`") from None
    except (ValueError, KeyError) as exc:
        raise SelectionError(f"{path}: not a feature selection ({exc})") from None


def selection_history(features_dir: Path) -> pd.DataFrame:
    """Every recorded selection's ranking (one row per candidate per selection), oldest first."""
    path = Path(features_dir) / "selection_history.parquet"
    return pd.read_parquet(path) if path.is_file() else pd.DataFrame()
