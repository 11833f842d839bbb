import os

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.schemas import TRADES, Kind
from pipeline.data.store import Partition, TickStore

DAY = 86_400 * 10**9
T0 = 1_723_161_256_000_000_000  # 2024-08-08 23:54:16 UTC
SYMBOL = "BTC/USDT:USDT"


def trades(ids, ts=None):
    ts = ts or [T0 + i for i in ids]
    return pa.table(
        {
            "ts_ns": ts,
            "recv_ns": [None] * len(ids),
            "trade_id": ids,
            "price": [100.0 + i for i in ids],
            "qty": [1.0] * len(ids),
            "side": [1] * len(ids),
        },
        schema=TRADES,
    )


def test_partitions_by_exchange_symbol_kind_and_utc_date(tmp_path):
    store = TickStore(tmp_path)
    with store.locked():
        store.write("binanceusdm", SYMBOL, Kind.TRADES, trades([1, 2, 3], [T0, T0 + 1, T0 + DAY]))
    assert store.partitions() == [
        Partition("binanceusdm", SYMBOL, Kind.TRADES, "2024-08-08"),
        Partition("binanceusdm", SYMBOL, Kind.TRADES, "2024-08-09"),
    ]
    directory = tmp_path / "ticks" / "exchange=binanceusdm" / "symbol=BTC%2FUSDT%3AUSDT" / "kind=trades"
    assert sorted(p.name for p in directory.iterdir()) == ["date=2024-08-08", "date=2024-08-09"]


def test_reingest_is_idempotent_and_overlaps_add_only_new_rows(tmp_path):
    store = TickStore(tmp_path)
    with store.locked():
        first = store.write("x", SYMBOL, Kind.TRADES, trades([1, 2, 3]))
        again = store.write("x", SYMBOL, Kind.TRADES, trades([1, 2, 3]))
        overlap = store.write("x", SYMBOL, Kind.TRADES, trades([3, 4, 4]))
    assert (first.added, again.added, again.duplicates) == (3, 0, 3)
    assert (overlap.added, overlap.duplicates) == (1, 2)
    assert store.read("x", SYMBOL, Kind.TRADES)["trade_id"].to_pylist() == [1, 2, 3, 4]


def test_read_returns_time_order_within_bounds(tmp_path):
    store = TickStore(tmp_path)
    with store.locked():
        store.write("x", SYMBOL, Kind.TRADES, trades([5, 6], [T0 + 50, T0 + 60]))
        store.write("x", SYMBOL, Kind.TRADES, trades([1, 2], [T0 + 10, T0 + 70]))
    table = store.read("x", SYMBOL, Kind.TRADES)
    assert table["trade_id"].to_pylist() == [1, 5, 6, 2]
    assert store.read("x", SYMBOL, Kind.TRADES, start_ns=T0 + 50, end_ns=T0 + 70)["trade_id"].to_pylist() == [5, 6]
    assert store.read("x", "ETH/USDT:USDT", Kind.TRADES).num_rows == 0


def test_writes_are_atomic_files_and_leftover_temp_files_are_ignored(tmp_path):
    store = TickStore(tmp_path)
    with store.locked():
        store.write("x", SYMBOL, Kind.TRADES, trades([1, 2]))
    directory = tmp_path / "ticks" / Partition("x", SYMBOL, Kind.TRADES, "2024-08-08").relative_dir()
    # What an ingest killed mid-write leaves behind: a temp file under a hidden name.
    pq.write_table(trades([99]), directory / ".part-dead.parquet.123.tmp")
    (directory / ".part-cut.parquet.124.tmp").write_bytes(b"PAR1 truncated")
    assert store.read("x", SYMBOL, Kind.TRADES)["trade_id"].to_pylist() == [1, 2]
    assert all(name.startswith((".", "part-")) for name in os.listdir(directory))
