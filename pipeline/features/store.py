"""The feature store: labelled feature rows per symbol and day, keyed by a dataset fingerprint.

Layout under ``$AUTOSCALP_HOME/features`` (or ``features.store_dir``)::

    datasets/exchange=<id>/symbol=<sym>/date=<YYYY-MM-DD>/<fingerprint>.parquet
    datasets/exchange=<id>/symbol=<sym>/date=<YYYY-MM-DD>/<fingerprint>.json   (sidecar, written last)
    selections/<selection id>.json, selection.json (the latest), selection_history.parquet

A partition's fingerprint hashes everything its rows depend on: the tick files read (names, which
the tick store derives from their content, and sizes) and whether later data exists, the day, the
definitions version (the source of pipeline/features and pipeline/labels.py), the label and
sampling configs and the feature names. Same fingerprint, same rows: a build finding it stored does
no extraction. Older fingerprints stay, so a past run's dataset can still be read.

Columns: ``ts_ns``, the features (float64), ``label`` (int8), ``fwd_return``, ``exit_ts_ns``, ``warm``.
The metadata (label config and costs, horizon, sampling, feature names, definitions version,
fingerprint) is in the parquet schema metadata under ``autoscalp`` and in the JSON sidecar.
Writes are atomic (temporary file, fsync, rename), as in pipeline.data.store.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.symbols import from_path_segment, path_segment
from pipeline.errors import AutoscalpError

METADATA_KEY = b"autoscalp"
_PIPELINE = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, order=True)
class DayKey:
    """One partition of the feature store: a symbol's UTC day."""

    exchange: str
    symbol: str
    date: str  # YYYY-MM-DD

    def relative_dir(self) -> Path:
        return Path(f"exchange={path_segment(self.exchange)}", f"symbol={path_segment(self.symbol)}",
                    f"date={self.date}")


# Modules of the feature package that compute no stored value: editing them keeps the store valid.
NOT_DEFINITIONS = frozenset({"selection.py", "check.py"})


@cache
def definitions_version() -> str:
    """Hash of the code that computes stored values: the feature package and the labels."""
    package = [p for p in sorted((_PIPELINE / "features").rglob("*.py")) if p.name not in NOT_DEFINITIONS]
    sources = package + [_PIPELINE / "labels.py"]
    digest = hashlib.sha256()
    for path in sources:
        digest.update(str(path.relative_to(_PIPELINE)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def fingerprint(parts: dict) -> str:
    """A stable hash of JSON-able inputs."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


class FeatureStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.datasets_dir = self.root / "datasets"

    def path(self, key: DayKey, fingerprint: str) -> Path:
        return self.datasets_dir / key.relative_dir() / f"{fingerprint}.parquet"

    def has(self, key: DayKey, fingerprint: str) -> bool:
        """True when the partition is completely written (its sidecar comes last)."""
        path = self.path(key, fingerprint)
        return path.is_file() and path.with_suffix(".json").is_file()

    def write(self, key: DayKey, fingerprint: str, rows: pd.DataFrame, metadata: dict) -> Path:
        path = self.path(key, fingerprint)
        table = pa.Table.from_pandas(rows, preserve_index=False)
        merged = {**(table.schema.metadata or {}), METADATA_KEY: json.dumps(metadata, default=str).encode()}
        write_parquet_atomic(path, table.replace_schema_metadata(merged))
        write_json_atomic(path.with_suffix(".json"), metadata)
        return path

    def read(self, key: DayKey, fingerprint: str, columns: list[str] | None = None) -> pd.DataFrame:
        path = self.path(key, fingerprint)
        if not self.has(key, fingerprint):
            raise AutoscalpError(f"{path}: not in the feature store; run `autoscalp features build`")
        return pq.read_table(path, columns=columns).to_pandas()

    def metadata(self, key: DayKey, fingerprint: str) -> dict:
        return json.loads(self.path(key, fingerprint).with_suffix(".json").read_text())

    def read_many(self, parts: list[tuple[DayKey, str]], columns: list[str] | None = None) -> pd.DataFrame:
        """Several partitions as one frame in time order (``exchange`` and ``symbol`` added when
        they are not all the same)."""
        frames = []
        for key, fp in parts:
            frame = self.read(key, fp, columns)
            frame["exchange"], frame["symbol"] = key.exchange, key.symbol
            frames.append(frame)
        if not frames:
            raise AutoscalpError("no feature partitions to read; run `autoscalp features build`")
        frame = pd.concat(frames, ignore_index=True).sort_values("ts_ns", kind="stable", ignore_index=True)
        if frame["exchange"].nunique() == 1 and frame["symbol"].nunique() == 1:
            frame = frame.drop(columns=["exchange", "symbol"])
        return frame

    def partitions(self) -> list[tuple[DayKey, str]]:
        """Every completely written (key, fingerprint), in path order."""
        found = []
        for sidecar in sorted(self.datasets_dir.glob("exchange=*/symbol=*/date=*/*.json")):
            exchange, symbol, date = (p.split("=", 1)[1] for p in sidecar.parent.relative_to(self.datasets_dir).parts)
            key = DayKey(from_path_segment(exchange), from_path_segment(symbol), date)
            if self.has(key, sidecar.stem):
                found.append((key, sidecar.stem))
        return found


def _replace_atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        write(temp)
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def write_parquet_atomic(path: Path, data: pa.Table | pd.DataFrame) -> None:
    table = pa.Table.from_pandas(data, preserve_index=False) if isinstance(data, pd.DataFrame) else data
    _replace_atomic(Path(path), lambda temp: pq.write_table(table, temp, compression="zstd"))


def write_json_atomic(path: Path, data: dict) -> None:
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    _replace_atomic(Path(path), lambda temp: temp.write_text(text))
