"""Live outcomes read back from the store: realised PnL on an average-cost position, the hit rate of
P(up) against the mid a horizon later, duplicates of a re-written part counted once."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.monitoring.feedback import SCHEMAS, judge, part_name, partition_dir, read_live, realised_pnl

S = 1_000_000_000


def test_realised_pnl_on_an_average_cost_position():
    # buy 1 @ 100, buy 1 @ 110 (entry 105), sell 1.5 @ 120 (+22.5), sell 1 @ 100 (0.5 closed: -2.5,
    # then short 0.5 @ 100), buy 0.5 @ 90 (+5)
    side = np.array([1, 1, -1, -1, 1])
    qty = np.array([1.0, 1.0, 1.5, 1.0, 0.5])
    price = np.array([100.0, 110.0, 120.0, 100.0, 90.0])
    np.testing.assert_allclose(realised_pnl(side, qty, price), [0.0, 0.0, 22.5, -2.5, 5.0])


def test_a_short_gains_when_the_price_falls():
    np.testing.assert_allclose(realised_pnl(np.array([-1, 1]), np.array([2.0, 2.0]), np.array([50.0, 45.0])),
                               [0.0, 10.0])  # fmt: skip


def test_judge_counts_hits_misses_and_flats_against_the_mid_a_horizon_later():
    mid_ts = np.array([0, 1, 2, 3, 4, 5, 6]) * S
    mid = np.array([100.0, 101.0, 102.0, 101.0, 101.0, 100.0, 100.0])
    ts = np.array([0, 1, 3, 4, 5]) * S
    p_up = np.array([0.7, 0.3, 0.6, np.nan, 0.8])  # up: hit; down: flat; up: miss; NaN; past the data
    assert judge(ts, p_up, mid_ts, mid, 2 * S) == (1, 1, 1)
    assert judge(ts, np.full(5, 0.5), mid_ts, mid, 2 * S) == (0, 0, 0)  # 0.5 says nothing
    assert judge(ts, p_up, mid_ts[:0], mid[:0], 2 * S) == (0, 0, 0)


def test_read_live_counts_a_row_written_twice_once(tmp_path):
    rows = [{"source": "abc", "id": i, "ts_ns": i * S, "symbol": "BTC/USDT:USDT", "client_id": f"c{i}",
             "fill_id": f"f{i}", "price": 100.0, "qty": 1.0, "side": 1, "fee_usdt": 0.01,
             "model_name": "m", "model_version": 1} for i in (1, 2, 3)]  # fmt: skip
    directory = partition_dir(tmp_path, "fills", "BTC/USDT:USDT", "1970-01-01")
    directory.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows[:2], schema=SCHEMAS["fills"]), directory / part_name("abc", 1, 2))
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMAS["fills"]), directory / part_name("abc", 1, 3))
    frame = read_live(tmp_path, "fills", "BTC/USDT:USDT")
    assert frame["id"].tolist() == [1, 2, 3]
    assert read_live(tmp_path, "decisions", "BTC/USDT:USDT").empty
    with pytest.raises(ValueError, match="unknown live kind 'orders'"):
        read_live(tmp_path, "orders", "BTC/USDT:USDT")
