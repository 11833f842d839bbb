"""The ingest step on an in-memory source: quality split, quarantine, idempotence, atomicity."""

import math
from dataclasses import dataclass, field

import pyarrow as pa
import pytest

from pipeline.config import QualityConfig
from pipeline.data.info import summarise
from pipeline.data.ingest import ingest
from pipeline.data.schemas import Kind
from pipeline.data.sources.base import TickBatch, rejects_table
from pipeline.data.store import TickStore
from pipeline.errors import SourceError

T0 = 1_723_161_256_000_000_000
SYMBOL = "BTC/USDT:USDT"


def trade_rows(ids, prices, exec_types=None, step_ns=10**6):
    table = pa.table(
        {
            "ts_ns": [T0 + i * step_ns for i in ids],
            "recv_ns": [T0 + i * step_ns + 5 for i in ids],
            "trade_id": ids,
            "price": prices,
            "qty": [0.5] * len(ids),
            "side": [1 if i % 2 else -1 for i in ids],
        }
    )
    if exec_types:
        table = table.append_column("exec_type", pa.array(exec_types))
    return table


@dataclass
class ListSource:
    """A TickSource over batches built in the test (fails after `fail_after` batches, if set)."""

    items: list[TickBatch]
    fail_after: int | None = None
    description: str = "memory:test"
    calls: list[int] = field(default_factory=list)

    def batches(self):
        for i, batch in enumerate(self.items):
            if self.fail_after is not None and i == self.fail_after:
                raise SourceError("memory:test: truncated gzip")
            yield batch


def test_valid_rows_stored_bad_rows_quarantined_and_reingest_adds_nothing(tmp_path):
    rows = trade_rows([1, 2, 3, 4], [100.0, math.nan, 100.2, 100.3], ["MARKET", "MARKET", "INSURANCE_FUND", None])
    rejects = rejects_table("memory:test", [("unparseable line 7: not JSON", "garbage")])
    source = ListSource([TickBatch("binanceusdm", SYMBOL, Kind.TRADES, rows, rejects)])
    store = TickStore(tmp_path)

    report = ingest(source, store, QualityConfig())
    assert (report.added, report.quarantined) == (2, 3)
    assert store.read("binanceusdm", SYMBOL, Kind.TRADES)["trade_id"].to_pylist() == [1, 4]

    again = ingest(source, store, QualityConfig())
    assert (again.added, again.quarantined) == (0, 0)
    assert again.streams[0].duplicates == 2

    # Unparseable lines have no time: they are kept in a partition dated "unknown".
    dated, undated = summarise(store, gap_threshold_s=5.0)
    assert (dated.date, dated.rows, dated.quarantined, dated.missing_trade_ids) == ("2024-08-08", 2, 2, 2)
    assert (undated.date, undated.rows, undated.quarantined) == ("unknown", 0, 1)


def test_a_source_failing_midway_leaves_the_store_unchanged(tmp_path):
    good = TickBatch("binanceusdm", SYMBOL, Kind.TRADES, trade_rows([1, 2], [1.0, 2.0]))
    store = TickStore(tmp_path)
    with pytest.raises(SourceError):
        ingest(ListSource([good, good], fail_after=1), store, QualityConfig())
    assert store.partitions() == [] and store.partitions(quarantine=True) == []


def test_info_reports_gaps_over_the_threshold(tmp_path):
    # Trades 1 s apart, then a 10 s silence.
    rows = trade_rows([0, 1, 2, 12], [1.0] * 4, step_ns=10**9)
    store = TickStore(tmp_path)
    ingest(ListSource([TickBatch("x", SYMBOL, Kind.TRADES, rows)]), store, QualityConfig())
    [summary] = summarise(store, gap_threshold_s=5.0)
    assert (summary.gaps, summary.max_gap_s, summary.missing_trade_ids) == (1, 10.0, 9)
    assert (summary.first_ns, summary.last_ns) == (T0, T0 + 12 * 10**9)
