"""What the store holds: rows, time span, gaps and quarantined rows per partition."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pyarrow.compute as pc

from pipeline.data.schemas import Kind
from pipeline.data.store import Partition, TickStore


@dataclass(frozen=True)
class PartitionSummary:
    exchange: str
    symbol: str
    kind: str
    date: str
    rows: int
    first_ns: int | None
    last_ns: int | None
    gaps: int  # silences longer than the gap threshold between consecutive rows
    max_gap_s: float
    missing_trade_ids: int | None  # trades only: ids absent from the contiguous id range
    quarantined: int

    def to_dict(self) -> dict:
        return asdict(self)


def summarise(store: TickStore, gap_threshold_s: float) -> list[PartitionSummary]:
    quarantined = {p: store.read_partition(p, quarantine=True).num_rows for p in store.partitions(quarantine=True)}
    summaries = [_summarise(store, p, gap_threshold_s, quarantined.pop(p, 0)) for p in store.partitions()]
    # Quarantined rows of a partition holding no valid rows (e.g. a file of only bad rows).
    for partition, count in quarantined.items():
        summaries.append(
            PartitionSummary(
                partition.exchange, partition.symbol, partition.kind.value, partition.date,
                0, None, None, 0, 0.0, None, count,
            )
        )
    return sorted(summaries, key=lambda s: (s.exchange, s.symbol, s.kind, s.date))


def _summarise(store: TickStore, partition: Partition, gap_threshold_s: float, quarantined: int) -> PartitionSummary:
    table = store.read_partition(partition)
    ts = np.sort(table.column("ts_ns").to_numpy())
    steps = np.diff(ts)
    missing = None
    if partition.kind is Kind.TRADES:
        ids = pc.unique(table.column("trade_id")).to_numpy()
        span = int(ids.max() - ids.min() + 1) if len(ids) else 0
        # Ids derived from hashes (e.g. BitMEX UUIDs) are not a sequence: no gap count then.
        missing = span - len(ids) if span <= 100 * len(ids) else None
    return PartitionSummary(
        exchange=partition.exchange,
        symbol=partition.symbol,
        kind=partition.kind.value,
        date=partition.date,
        rows=table.num_rows,
        first_ns=int(ts[0]) if len(ts) else None,
        last_ns=int(ts[-1]) if len(ts) else None,
        gaps=int((steps > gap_threshold_s * 1e9).sum()),
        max_gap_s=float(steps.max() / 1e9) if len(steps) else 0.0,
        missing_trade_ids=missing,
        quarantined=quarantined,
    )
