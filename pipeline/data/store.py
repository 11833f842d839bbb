"""The partitioned parquet tick store.

Layout: ``<root>/ticks/exchange=<id>/symbol=<sym>/kind=<kind>/date=<YYYY-MM-DD>/part-*.parquet`` and
the same under ``<root>/quarantine/`` for rejected rows with their reasons. Partition values are
URL-encoded (``BTC%2FUSDT%3AUSDT``), so any unified symbol is a safe, reversible directory name.

Writes are append-only and atomic: new rows go to a new part file written under a temporary name
and renamed into place, so a reader (or an interrupted ingest) never sees half a file. Re-ingest is
idempotent: rows whose dedupe key (schemas.DEDUPE_KEYS) is already stored are not written again.
A process-level lock serialises writers of one store.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.data.schemas import DEDUPE_KEYS, QUARANTINE, SCHEMAS, Kind
from pipeline.data.symbols import from_path_segment, path_segment

NS_PER_DAY = 86_400 * 10**9
UNKNOWN_DATE = "unknown"


@dataclass(frozen=True)
class Partition:
    exchange: str
    symbol: str
    kind: Kind
    date: str  # YYYY-MM-DD (UTC) of ts_ns, or "unknown" for quarantined rows without a time

    def relative_dir(self) -> Path:
        return Path(
            f"exchange={path_segment(self.exchange)}",
            f"symbol={path_segment(self.symbol)}",
            f"kind={self.kind.value}",
            f"date={self.date}",
        )


@dataclass(frozen=True)
class WriteResult:
    added: int
    duplicates: int


class TickStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.ticks_dir = self.root / "ticks"
        self.quarantine_dir = self.root / "quarantine"

    # ---- writing ---------------------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's writer lock (blocking) for a group of writes."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def write(self, exchange: str, symbol: str, kind: Kind, rows: pa.Table) -> WriteResult:
        """Append valid rows of one kind, skipping those already stored. Call under ``locked()``."""
        rows = rows.select(SCHEMAS[kind].names).cast(SCHEMAS[kind])
        return self._append(self.ticks_dir, exchange, symbol, kind, rows, DEDUPE_KEYS[kind])

    def write_quarantine(self, exchange: str, symbol: str, kind: Kind, rows: pa.Table) -> WriteResult:
        rows = rows.select(QUARANTINE.names).cast(QUARANTINE)
        return self._append(self.quarantine_dir, exchange, symbol, kind, rows, ("reason", "row"))

    def _append(
        self, base: Path, exchange: str, symbol: str, kind: Kind, rows: pa.Table, keys: tuple[str, ...]
    ) -> WriteResult:
        added = duplicates = 0
        for date, part in _split_by_date(rows):
            directory = base / Partition(exchange, symbol, kind, date).relative_dir()
            hashes = _row_hashes(part, keys)
            fresh = ~np.isin(hashes, _stored_hashes(directory, keys)) & _first_occurrence(hashes)
            new_rows = part.filter(pa.array(fresh))
            duplicates += part.num_rows - new_rows.num_rows
            if new_rows.num_rows:
                _write_atomic(directory, new_rows)
                added += new_rows.num_rows
        return WriteResult(added, duplicates)

    # ---- reading ---------------------------------------------------------------------------

    def partitions(self, quarantine: bool = False) -> list[Partition]:
        base = self.quarantine_dir if quarantine else self.ticks_dir
        found = []
        for directory in sorted(base.glob("exchange=*/symbol=*/kind=*/date=*")):
            if not any(directory.glob("part-*.parquet")):
                continue
            exchange, symbol, kind, date = (part.split("=", 1)[1] for part in directory.relative_to(base).parts)
            found.append(Partition(from_path_segment(exchange), from_path_segment(symbol), Kind(kind), date))
        return found

    def read_partition(self, partition: Partition, quarantine: bool = False) -> pa.Table:
        base = self.quarantine_dir if quarantine else self.ticks_dir
        schema = QUARANTINE if quarantine else SCHEMAS[partition.kind]
        return _read_parts(base / partition.relative_dir(), schema)

    def read(
        self,
        exchange: str,
        symbol: str,
        kind: Kind,
        start_ns: int | None = None,
        end_ns: int | None = None,
    ) -> pa.Table:
        """All stored rows of one stream in time order, optionally within [start_ns, end_ns)."""
        tables = [
            self.read_partition(p)
            for p in self.partitions()
            if (p.exchange, p.symbol, p.kind) == (exchange, symbol, kind)
            and _date_overlaps(p.date, start_ns, end_ns)
        ]
        table = pa.concat_tables(tables) if tables else SCHEMAS[kind].empty_table()
        if start_ns is not None:
            table = table.filter(pc.greater_equal(table["ts_ns"], start_ns))
        if end_ns is not None:
            table = table.filter(pc.less(table["ts_ns"], end_ns))
        return table.take(pc.sort_indices(table, [("ts_ns", "ascending")]))


def _split_by_date(rows: pa.Table) -> Iterator[tuple[str, pa.Table]]:
    ts = rows.column("ts_ns")
    days = pc.divide(ts.fill_null(-1), NS_PER_DAY).to_numpy()
    days = np.where(np.asarray(pc.is_null(ts), dtype=bool), -1, days)
    for day in np.unique(days):
        date = UNKNOWN_DATE if day < 0 else str(np.datetime64(int(day), "D"))
        yield date, rows.filter(pa.array(days == day))


def _row_hashes(rows: pa.Table, keys: tuple[str, ...]) -> np.ndarray:
    frame = rows.select(list(keys)).to_pandas()
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def _stored_hashes(directory: Path, keys: tuple[str, ...]) -> np.ndarray:
    parts = sorted(directory.glob("part-*.parquet"))
    if not parts:
        return np.empty(0, dtype=np.uint64)
    return _row_hashes(pa.concat_tables(pq.read_table(p, columns=list(keys)) for p in parts), keys)


def _first_occurrence(hashes: np.ndarray) -> np.ndarray:
    first = np.zeros(len(hashes), dtype=bool)
    first[np.unique(hashes, return_index=True)[1]] = True
    return first


def _write_atomic(directory: Path, rows: pa.Table) -> Path:
    rows = rows.take(pc.sort_indices(rows, [("ts_ns", "ascending")])) if "ts_ns" in rows.column_names else rows
    digest = hashlib.blake2b(_row_hashes(rows, tuple(rows.column_names)).tobytes(), digest_size=8).hexdigest()
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"part-{digest}.parquet"
    temp = directory / f".{final.name}.{os.getpid()}.tmp"
    pq.write_table(rows, temp, compression="zstd")
    with open(temp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temp, final)
    return final


def _read_parts(directory: Path, schema: pa.Schema) -> pa.Table:
    parts = sorted(directory.glob("part-*.parquet"))
    if not parts:
        return schema.empty_table()
    return pa.concat_tables(pq.read_table(p, schema=schema) for p in parts)


def _date_overlaps(date: str, start_ns: int | None, end_ns: int | None) -> bool:
    if date == UNKNOWN_DATE:
        return False
    day_start = int(np.datetime64(date, "ns").astype(np.int64))
    return (start_ns is None or start_ns < day_start + NS_PER_DAY) and (end_ns is None or end_ns > day_start)
