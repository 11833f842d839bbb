import json
import math

import pyarrow as pa

from pipeline.data.quality import split_valid
from pipeline.data.schemas import QUARANTINE, QUOTES, TRADES, Kind

T0 = 1_723_161_256_000_000_000
MS = 1_000_000


def trades(**overrides):
    base = {
        "ts_ns": [T0, T0 + MS, T0 + 2 * MS],
        "recv_ns": [None, None, None],
        "trade_id": [1, 2, 3],
        "price": [100.0, 100.1, 100.2],
        "qty": [1.0, 2.0, 3.0],
        "side": [1, -1, 1],
    }
    base.update(overrides)
    return pa.table(base)


def test_clean_rows_pass_untouched():
    result = split_valid(Kind.TRADES, trades(), "test", 0)
    assert result.valid.schema == TRADES
    assert result.valid.num_rows == 3 and result.quarantined.num_rows == 0


def test_bad_values_are_quarantined_with_reasons_and_the_rest_kept():
    table = trades(price=[100.0, math.nan, -1.0], qty=[0.0, 1.0, 1.0])
    result = split_valid(Kind.TRADES, table, "file:x", 0)
    assert result.valid.num_rows == 0
    assert result.quarantined.schema == QUARANTINE
    assert result.quarantined["reason"].to_pylist() == [
        "non-positive or NaN quantity",
        "non-positive or NaN price",
        "non-positive or NaN price",
    ]
    assert json.loads(result.quarantined["row"][0].as_py())["trade_id"] == 1
    assert set(result.quarantined["source"].to_pylist()) == {"file:x"}


def test_non_market_execution_types_are_not_trades():
    table = trades().append_column("exec_type", pa.array(["MARKET", "INSURANCE_FUND", None]))
    result = split_valid(Kind.TRADES, table, "t", 0)
    assert result.valid["trade_id"].to_pylist() == [1, 3]
    assert result.quarantined["reason"].to_pylist() == ["execution type INSURANCE_FUND is not a market trade"]
    assert "exec_type" not in result.valid.column_names


def test_timestamps_going_backwards_beyond_tolerance():
    table = trades(ts_ns=[T0 + 5000 * MS, T0 + 4500 * MS, T0 + 3000 * MS])
    result = split_valid(Kind.TRADES, table, "t", 1000 * MS)
    # 0.5 s back is within the 1 s tolerance; 2 s back is not.
    assert result.valid["trade_id"].to_pylist() == [1, 2]
    assert result.quarantined["reason"].to_pylist() == ["timestamp goes backwards by more than 1000 ms"]


def test_a_late_bad_row_does_not_move_the_clock():
    # The NaN-priced row far in the future must not make the following good rows look late.
    table = trades(ts_ns=[T0, T0 + 10**12, T0 + MS], price=[1.0, math.nan, 1.0])
    result = split_valid(Kind.TRADES, table, "t", 0)
    assert result.valid["trade_id"].to_pylist() == [1, 3]


def test_missing_and_absurd_timestamps():
    table = trades(ts_ns=pa.array([None, 5, T0], pa.int64()))
    result = split_valid(Kind.TRADES, table, "t", 0)
    assert result.quarantined["reason"].to_pylist() == ["missing timestamp", "timestamp out of range"]


def test_crossed_and_invalid_books():
    table = pa.table(
        {
            "ts_ns": [T0, T0 + 1, T0 + 2, T0 + 3],
            "recv_ns": pa.nulls(4, pa.int64()),
            "update_id": [1, 2, 3, 4],
            "bid_px": [100.0, 100.0, 100.5, 0.0],
            "bid_qty": [1.0, -1.0, 1.0, 1.0],
            "ask_px": [100.1, 100.1, 100.4, 100.1],
            "ask_qty": [1.0, 1.0, 1.0, 1.0],
        }
    )
    result = split_valid(Kind.QUOTES, table, "t", 0)
    assert result.valid.schema == QUOTES
    assert result.valid["update_id"].to_pylist() == [1]
    assert result.quarantined["reason"].to_pylist() == [
        "negative or NaN bid/ask size",
        "crossed book (bid >= ask)",
        "non-positive or NaN bid/ask price",
    ]
