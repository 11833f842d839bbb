"""The training table of one symbol: the selected features and the labels, rows in time order.

Read from the feature store (the partitions a features build recorded, and its selection), or made
from any frame with the same columns (tests with planted signals). Everything a bad dataset can get
wrong is checked here, before any model is fitted or any MLflow run is opened: no rows, missing
columns, NaN or infinite features, timestamps out of order, labels with one class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.errors import AutoscalpError
from pipeline.features.store import FeatureStore, fingerprint

LABEL_COLUMNS = ("label", "fwd_return", "exit_ts_ns")


class TrainingDataError(AutoscalpError):
    """A feature set the models cannot be trained on."""


@dataclass(frozen=True)
class TrainingTable:
    symbol: str
    feature_names: tuple[str, ...]
    X: np.ndarray  # float64 [rows, features]
    y: np.ndarray  # int64 0/1: 1 = label +1 (the long take-profit was hit first)
    ts_ns: np.ndarray  # int64, non-decreasing
    exit_ts_ns: np.ndarray  # int64: when each label was decided (purging, embargo)
    dataset: str  # fingerprint of the rows (the feature partitions, or the frame's content)
    label_spec: dict  # the label config, costs and horizon the labels were made with
    features_version: str  # definitions version of the code that computed the features

    @property
    def rows(self) -> int:
        return len(self.y)


def table_from_frame(
    frame: pd.DataFrame, feature_names: tuple[str, ...] | list[str], *, symbol: str, dataset: str = "",
    label_spec: dict | None = None, features_version: str = "",
) -> TrainingTable:
    """Check and convert a frame (``ts_ns``, the features, ``label`` in {-1, 0, 1}, ``exit_ts_ns``)."""
    names = tuple(feature_names)
    where = f"{symbol}: the feature set"
    if not names:
        raise TrainingDataError(f"{where} names no features (the selection is empty)")
    missing = [c for c in ("ts_ns", *names, "label", "exit_ts_ns") if c not in frame.columns]
    if missing:
        raise TrainingDataError(f"{where} has no column {missing[0]!r}; rebuild it with `autoscalp features build`")
    if frame.empty:
        raise TrainingDataError(f"{where} has no rows; ingest more data or lower the warm-up budget")
    try:
        X = frame[list(names)].to_numpy(np.float64)
        label = frame["label"].to_numpy()
        ts_ns = frame["ts_ns"].to_numpy(np.int64)
        exit_ts_ns = frame["exit_ts_ns"].to_numpy(np.int64)
    except (TypeError, ValueError) as exc:
        raise TrainingDataError(f"{where} has a non-numeric column ({exc})") from None
    bad = ~np.isfinite(X).all(axis=0)
    if bad.any():
        raise TrainingDataError(f"{where} has NaN or infinite values in {names[int(np.argmax(bad))]!r} (corrupt rows)")
    if not np.isin(label, (-1, 0, 1)).all():
        raise TrainingDataError(f"{where} has labels outside -1/0/+1 (corrupt rows)")
    if np.any(np.diff(ts_ns) < 0) or np.any(exit_ts_ns < ts_ns):
        raise TrainingDataError(f"{where} is not in time order, or a label ends before its row (corrupt rows)")
    y = (label == 1).astype(np.int64)
    if y.min() == y.max():
        raise TrainingDataError(
            f"{where}: every one of its {len(y)} labels is {'+1' if y[0] else 'not +1'}: one class, nothing to learn "
            "(check labels.tp_bps / sl_bps against the data's volatility)"
        )
    if not dataset:
        dataset = fingerprint({"rows": len(y), "sum": float(np.round(X.sum(), 6)), "first": int(ts_ns[0]),
                               "last": int(ts_ns[-1]), "pos": int(y.sum()), "names": list(names)})
    return TrainingTable(symbol, names, X, y, ts_ns, exit_ts_ns, dataset, dict(label_spec or {}), features_version)


def load_table(
    features: FeatureStore, partitions: list[dict], feature_names: list[str] | tuple[str, ...], symbol: str,
) -> TrainingTable:
    """The symbol's rows of the partitions a features build reported (``PartitionRecord.to_dict()``)."""
    from pipeline.features.dataset import dataset_fingerprint, PartitionRecord

    records = [PartitionRecord.from_dict(p) for p in partitions if p["symbol"] == symbol and p["rows"]]
    if not records:
        raise TrainingDataError(f"{symbol}: the feature store has no rows for it; run `autoscalp features build`")
    columns = ["ts_ns", *feature_names, *LABEL_COLUMNS]
    try:
        frame = features.read_many([(r.key, r.fingerprint) for r in records], columns)
        meta = features.metadata(records[-1].key, records[-1].fingerprint)
    except AutoscalpError:
        raise
    except Exception as exc:  # a truncated or foreign parquet file, a broken sidecar
        raise TrainingDataError(f"{symbol}: the feature set cannot be read ({type(exc).__name__}: {exc})") from None
    label_spec = {"labels": meta.get("labels"), "costs": meta.get("costs"), "horizon": meta.get("horizon"),
                  "positive": "label == +1 (long take-profit first)"}
    return table_from_frame(frame, feature_names, symbol=symbol, dataset=dataset_fingerprint(records),
                            label_spec=label_spec, features_version=meta.get("definitions_version", ""))
