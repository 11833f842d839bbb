"""File importers against every real file in ../shared/data (counts from its README), plus
crafted files for pass-through, rejects and every error case."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipeline.data.schemas import EXEC_TYPE, QUARANTINE, SCHEMAS, Kind, conform
from pipeline.data.sources.base import TickBatch
from pipeline.data.sources.files import FORMATS, FileSource, detect_format
from pipeline.errors import SourceError

pytestmark = pytest.mark.realdata

MS = 1_000_000
SECOND = 1_000_000_000


def utc_ns(text: str) -> int:
    """'2024-08-08 23:54:16.5' (UTC) -> ns."""
    fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in text else "%Y-%m-%d %H:%M:%S"
    moment = datetime.strptime(text, fmt).replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1_000_000) * 1_000


_CACHE: dict[Path, list[TickBatch]] = {}


def load(path: Path, **kwargs: object) -> list[TickBatch]:
    """Batches of a real file, parsed once per test session (keeps the module fast)."""
    if kwargs:
        return list(FileSource(path, **kwargs).batches())  # type: ignore[arg-type]
    if path not in _CACHE:
        _CACHE[path] = list(FileSource(path).batches())
    return _CACHE[path]


def by_kind(batches: list[TickBatch]) -> dict[Kind, TickBatch]:
    kinds = [batch.kind for batch in batches]
    assert len(kinds) == len(set(kinds)), kinds
    return {batch.kind: batch for batch in batches}


def ints(batch: TickBatch, name: str) -> np.ndarray:
    return batch.rows.column(name).to_numpy()


def assert_schema(batch: TickBatch) -> None:
    rows = batch.rows
    assert rows.schema.equals(conform(batch.kind, rows).schema)
    assert rows.column_names[: len(SCHEMAS[batch.kind])] == SCHEMAS[batch.kind].names
    for field in SCHEMAS[batch.kind]:
        if not field.nullable:
            assert rows.column(field.name).null_count == 0, field.name
    assert batch.rejects.schema.equals(QUARANTINE)
    assert batch.rejects.num_rows == 0


def assert_monotone_ish(batch: TickBatch, tolerance_ns: int = SECOND) -> None:
    ts = ints(batch, "ts_ns")
    assert (np.diff(ts) >= -tolerance_ns).all()


def write_gz(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


# --- 1. binance_ws_raw: the README's per-file statistics ---------------------------------------

RAW_FILES = {
    # file: (market, trades, bookTicker, depth diffs, snapshot line, E span, trade price range)
    "usdm_btcusdt_20240808.gz": ("usdm", 21313, 66089, 6551, 55, ("2024-08-08 23:54:16", "2024-08-09 00:00:01"), (61590.3, 61839.9)),
    "usdm_ethusdt_20240808.gz": ("usdm", 14076, 53992, 6586, 41, ("2024-08-08 23:54:16", "2024-08-09 00:00:01"), (2677.9, 2684.82)),
    "spot_btcusdt_20240808.gz": ("spot", 9757, 28040, 3451, 8, ("2024-08-08 23:54:15", "2024-08-09 00:00:01"), (61583.22, 61860.8)),
    "spot_btcusdt_20240809.gz": ("spot", 10147, 45134, 3044, None, ("2024-08-09 00:00:01", "2024-08-09 00:05:05"), (61556.04, 61744.37)),
    "spot_ethusdt_20240808.gz": ("spot", 6106, 24077, 3434, 6, ("2024-08-08 23:54:15", "2024-08-09 00:00:01"), (2679.0, 2685.37)),
    "spot_ethusdt_20240809.gz": ("spot", 8409, 34681, 3036, None, ("2024-08-09 00:00:01", "2024-08-09 00:05:05"), (2673.6, 2684.39)),
    "cm_btcusd_perp_20240808.gz": ("coinm", 2286, 19136, 26847, 37, ("2024-08-08 23:54:17", "2024-08-09 00:00:01"), (61610.0, 61845.0)),
    "cm_btcusd_perp_20240809.gz": ("coinm", 2949, 29219, 17948, None, ("2024-08-09 00:00:01", "2024-08-09 00:05:04"), (61536.4, 61730.6)),
    "cm_ethusd_perp_20240808.gz": ("coinm", 1732, 15812, 22909, 27, ("2024-08-08 23:54:17", "2024-08-09 00:00:01"), (2678.61, 2684.85)),
    "cm_ethusd_perp_20240809.gz": ("coinm", 1863, 19751, 16246, None, ("2024-08-09 00:00:01", "2024-08-09 00:05:04"), (2673.37, 2684.2)),
}
EXCHANGE = {"usdm": "binanceusdm", "spot": "binance", "coinm": "binancecoinm"}


def raw_symbol(name: str, market: str) -> str:
    base = "BTC" if "btc" in name else "ETH"
    return {"usdm": f"{base}/USDT:USDT", "spot": f"{base}/USDT", "coinm": f"{base}/USD:{base}"}[market]


@pytest.mark.parametrize("name", sorted(RAW_FILES))
def test_binance_ws_raw_matches_readme(shared_data: Path, name: str) -> None:
    market, n_trades, n_quotes, n_diffs, snapshot_line, span, (low, high) = RAW_FILES[name]
    path = shared_data / "binance_ws_raw" / name
    assert detect_format(path) == "binance_ws_raw"
    batches = load(path)
    assert {(b.exchange, b.symbol) for b in batches} == {(EXCHANGE[market], raw_symbol(name, market))}
    kinds = by_kind(batches)
    assert set(kinds) == {Kind.TRADES, Kind.QUOTES, Kind.DEPTH}
    for batch in batches:
        assert_schema(batch)
        assert_monotone_ish(batch)
        ts = ints(batch, "ts_ns")
        assert utc_ns(span[0]) - 2 * SECOND <= ts.min() and ts.max() <= utc_ns(span[1]) + 2 * SECOND
        assert batch.rows.column("recv_ns").null_count == 0

    trades = kinds[Kind.TRADES]
    assert trades.rows.num_rows == n_trades
    ids = ints(trades, "trade_id")
    assert len(np.unique(ids)) == n_trades and ids.max() - ids.min() + 1 == n_trades  # contiguous
    price = trades.rows.column("price").to_numpy()
    assert price.min() == pytest.approx(low) and price.max() == pytest.approx(high)
    exec_type = trades.rows.column(EXEC_TYPE)
    if market == "spot":
        assert exec_type.null_count == n_trades
    else:
        assert set(exec_type.to_pylist()) == {"MARKET"}

    assert kinds[Kind.QUOTES].rows.num_rows == n_quotes

    depth = kinds[Kind.DEPTH].rows
    snap = depth.column("is_snapshot").to_numpy(zero_copy_only=False)
    diff_ids = depth.filter(pa.array(~snap)).column("update_id").to_numpy()
    assert len(np.unique(diff_ids)) == n_diffs
    assert set(depth.column("side").to_pylist()) == {1, -1}
    if snapshot_line is None:
        assert not snap.any()
    else:
        assert snap.sum() == 2000  # 1,000 levels per side
        snapshot = depth.filter(pa.array(snap))
        assert snapshot.column("side").to_pylist().count(1) == 1000
        assert len(set(snapshot.column("update_id").to_pylist())) == 1
        assert snapshot.column("first_update_id").null_count == 2000
        # rows stay in arrival order: the snapshot sits between the diffs around its line
        first = int(np.flatnonzero(snap)[0])
        assert 0 < first < depth.num_rows - 2000 and snap[first : first + 2000].all()
    prev = depth.filter(pa.array(~snap)).column("prev_update_id")
    if market == "spot":
        assert prev.null_count == len(prev)
    else:
        assert prev.null_count == 0


def test_usdm_btcusdt_exact_values(shared_data: Path) -> None:
    kinds = by_kind(load(shared_data / "binance_ws_raw" / "usdm_btcusdt_20240808.gz"))
    trade = kinds[Kind.TRADES].rows.slice(0, 1).to_pylist()[0]
    # line 3: {"T":1723161256322,"t":5266583935,"p":"61800.30","q":"0.006","X":"MARKET","m":false}
    assert trade == {
        "ts_ns": 1723161256322 * MS,
        "recv_ns": 1723161255088176367,
        "trade_id": 5266583935,
        "price": 61800.30,
        "qty": 0.006,
        "side": 1,
        EXEC_TYPE: "MARKET",
    }
    quote = kinds[Kind.QUOTES].rows.slice(0, 1).to_pylist()[0]
    assert quote == {
        "ts_ns": 1723161256313 * MS,
        "recv_ns": 1723161255088169167,
        "update_id": 5123107839020,
        "bid_px": 61800.20,
        "bid_qty": 2.507,
        "ask_px": 61800.30,
        "ask_qty": 2.510,
    }
    depth = kinds[Kind.DEPTH].rows
    first = depth.slice(0, 1).to_pylist()[0]
    assert first["update_id"] == 5123107837557 and first["first_update_id"] == 5123107832006
    assert first["prev_update_id"] == 5123107831937 and first["is_snapshot"] is False
    assert (first["side"], first["price"], first["qty"]) == (1, 58710.20, 0.014)
    snapshot = depth.filter(depth.column("is_snapshot")).slice(0, 1).to_pylist()[0]
    assert snapshot["update_id"] == 5123107852948 and snapshot["ts_ns"] == 1723161256493 * MS
    assert snapshot["recv_ns"] == 1723161255319702566 and (snapshot["price"], snapshot["qty"]) == (61800.20, 2.909)
    # the futures diffs chain: each diff's pu is the previous diff's u
    diffs = depth.filter(pa.compute.invert(depth.column("is_snapshot")))
    u = np.unique(diffs.column("update_id").to_numpy())
    pu = np.unique(diffs.column("prev_update_id").to_numpy())
    assert (pu[1:] == u[:-1]).all()


def test_side_follows_buyer_is_maker(shared_data: Path) -> None:
    for name in ("usdm_ethusdt_20240808.gz", "spot_btcusdt_20240809.gz", "cm_btcusd_perp_20240808.gz"):
        path = shared_data / "binance_ws_raw" / name
        text = gzip.decompress(path.read_bytes())
        sold = text.count(b'"m":true')  # only trade messages carry m
        bought = text.count(b'"m":false')
        side = load(path)[0].rows.column("side").to_numpy()
        assert ((side == -1).sum(), (side == 1).sum()) == (sold, bought), name


def test_coin_m_quantities_are_converted_to_base(shared_data: Path) -> None:
    kinds = by_kind(load(shared_data / "binance_ws_raw" / "cm_btcusd_perp_20240808.gz"))
    trade = kinds[Kind.TRADES].rows.slice(0, 1).to_pylist()[0]
    assert trade["trade_id"] == 849714402 and trade["price"] == 61804.8
    assert trade["qty"] == pytest.approx(4 * 100 / 61804.8)  # 4 contracts of 100 USD
    quote = kinds[Kind.QUOTES].rows.slice(0, 1).to_pylist()[0]
    assert quote["bid_qty"] == pytest.approx(35 * 100 / 61804.7)
    assert quote["ask_qty"] == pytest.approx(1645 * 100 / 61804.8)
    depth = kinds[Kind.DEPTH].rows
    snapshot = depth.filter(depth.column("is_snapshot")).slice(0, 1).to_pylist()[0]
    assert (snapshot["price"], snapshot["qty"]) == (61804.7, pytest.approx(35 * 100 / 61804.7))
    assert snapshot["update_id"] == 1007198635033
    eth = by_kind(load(shared_data / "binance_ws_raw" / "cm_ethusd_perp_20240808.gz"))[Kind.TRADES].rows
    # ETHUSD_PERP contracts are 10 USD: qty * price / 10 is a whole number of contracts
    contracts = eth.column("qty").to_numpy() * eth.column("price").to_numpy() / 10
    assert np.allclose(contracts, np.round(contracts)) and (np.round(contracts) >= 1).all()
    # BTC trades of the 0809 file are BTC-sized, not contract counts
    qty = by_kind(load(shared_data / "binance_ws_raw" / "cm_btcusd_perp_20240809.gz"))[Kind.TRADES].rows.column("qty")
    assert pa.compute.max(qty).as_py() < 5


def test_spot_book_ticker_time_is_offset_corrected(shared_data: Path) -> None:
    kinds = by_kind(load(shared_data / "binance_ws_raw" / "spot_btcusdt_20240808.gz"))
    quotes = kinds[Kind.QUOTES].rows
    offset = ints(kinds[Kind.QUOTES], "ts_ns") - ints(kinds[Kind.QUOTES], "recv_ns")
    assert len(np.unique(offset)) == 1  # one offset for the file ...
    assert 1_265 * MS <= offset[0] <= 1_280 * MS  # ... the collector's ~1.27 s lag (README: -1272 ms)
    # Cross-check against exchange time: the depth diff that contains a quote's update id was
    # published (E) at most one 100 ms batch after the quote's event.
    depth = kinds[Kind.DEPTH].rows
    diffs = depth.filter(pa.compute.invert(depth.column("is_snapshot")))
    first_u = diffs.column("first_update_id").to_numpy()
    last_u = diffs.column("update_id").to_numpy()
    diff_ts = ints(TickBatch("", "", Kind.DEPTH, diffs), "ts_ns")
    quote_u = quotes.column("update_id").to_numpy()
    at = np.searchsorted(last_u, quote_u)
    inside = (at < len(last_u)) & (first_u[np.minimum(at, len(last_u) - 1)] <= quote_u)
    lag = diff_ts[at[inside]] - ints(kinds[Kind.QUOTES], "ts_ns")[inside]
    assert inside.mean() > 0.9
    assert -20 * MS < np.median(lag) < 100 * MS  # uncorrected it would be ~ +1,270 ms
    # the spot REST snapshot has no time either: recv + the same offset
    snapshot = depth.filter(depth.column("is_snapshot")).slice(0, 1).to_pylist()[0]
    assert snapshot["ts_ns"] - snapshot["recv_ns"] == offset[0]
    assert snapshot["update_id"] == 50093239218


def test_day_split_files_continue(shared_data: Path) -> None:
    first = load(shared_data / "binance_ws_raw" / "spot_ethusdt_20240808.gz")[0].rows
    second = load(shared_data / "binance_ws_raw" / "spot_ethusdt_20240809.gz")[0].rows
    assert pa.compute.max(first.column("trade_id")).as_py() + 1 == pa.compute.min(second.column("trade_id")).as_py()


# --- 2. tardis_csv ---------------------------------------------------------------------------


def test_tardis_trades(shared_data: Path) -> None:
    path = shared_data / "tardis_binance_futures_btcusdt_20200222" / "trades.csv"
    assert detect_format(path) == "tardis_csv"
    [batch] = load(path)
    assert (batch.exchange, batch.symbol, batch.kind) == ("binanceusdm", "BTC/USDT:USDT", Kind.TRADES)
    assert_schema(batch)
    assert_monotone_ish(batch)
    rows = batch.rows
    assert rows.num_rows == 9999
    assert rows.column("trade_id").to_pylist() == list(range(42377944, 42387943))
    side = rows.column("side").to_numpy()
    assert ((side == 1).sum(), (side == -1).sum()) == (5267, 4732)
    ts = ints(batch, "ts_ns")
    assert ts[0] == utc_ns("2020-02-22 00:00:02.111") and ts.max() == utc_ns("2020-02-22 02:05:47.728")
    latency = np.median(ints(batch, "recv_ns") - ts)
    assert 100 * MS < latency < 160 * MS  # README: median 128 ms (µs timestamps read as µs)
    assert rows.slice(0, 1).to_pylist()[0] | {"ts_ns": 0, "recv_ns": 0} == {
        "ts_ns": 0, "recv_ns": 0, "trade_id": 42377944, "price": 9682.0, "qty": 0.132, "side": 1,
    }


def test_tardis_quotes(shared_data: Path) -> None:
    [batch] = load(shared_data / "tardis_binance_futures_btcusdt_20200222" / "quotes.csv")
    assert (batch.exchange, batch.symbol, batch.kind) == ("binanceusdm", "BTC/USDT:USDT", Kind.QUOTES)
    assert_schema(batch)
    assert_monotone_ish(batch)
    rows = batch.rows
    assert rows.num_rows == 9999
    ts = ints(batch, "ts_ns")
    assert ts.min() == utc_ns("2020-02-22 00:00:01.096") and ts.max() == utc_ns("2020-02-22 00:03:47.061")
    # ask_amount comes before ask_price in the file: columns must not be swapped
    first = rows.slice(0, 1).to_pylist()[0]
    assert (first["ask_qty"], first["ask_px"], first["bid_px"], first["bid_qty"]) == (0.84, 9682.0, 9681.92, 0.67)
    assert (rows.column("bid_px").to_numpy() < rows.column("ask_px").to_numpy()).all()  # no crossed quotes


def test_tardis_format_samples(shared_data: Path) -> None:
    folder = shared_data / "tardis_format_samples"

    [bitmex] = load(folder / "bitmex_trades_XBTUSD.csv")
    assert (bitmex.exchange, bitmex.symbol, bitmex.kind, bitmex.rows.num_rows) == ("bitmex", "BTC/USD:BTC", Kind.TRADES, 10)
    first = bitmex.rows.slice(0, 1).to_pylist()[0]
    assert first["qty"] == pytest.approx(2152 / 8531.5)  # 2,152 USD contracts -> BTC
    assert first["side"] == -1 and first["ts_ns"] == 1583020803145000 * 1000 and first["recv_ns"] == 1583020803307160 * 1000
    uuid = "ccc3c1fa-212c-e8b0-1706-9b9c4f3d5ecf"
    expected = int.from_bytes(hashlib.blake2b(uuid.encode(), digest_size=8).digest(), "big") & (2**63 - 1)
    assert first["trade_id"] == expected
    assert len(set(bitmex.rows.column("trade_id").to_pylist())) == 10

    [deribit] = load(folder / "deribit_incremental_book_L2_BTC-PERPETUAL.csv")
    assert (deribit.exchange, deribit.symbol, deribit.kind, deribit.rows.num_rows) == ("deribit", "BTC/USD:BTC", Kind.DEPTH, 15)
    first = deribit.rows.slice(0, 1).to_pylist()[0]
    assert first["is_snapshot"] is True and first["side"] == -1 and first["price"] == 6421.5
    assert first["qty"] == pytest.approx(18640 / 6421.5)  # USD amount -> BTC
    assert first["update_id"] == first["ts_ns"] == 1585699200245000 * 1000

    [huobi] = load(folder / "huobi-dm-swap_quotes_BTC-USD.csv")
    assert (huobi.exchange, huobi.symbol, huobi.kind, huobi.rows.num_rows) == ("huobi", "BTC/USD:BTC", Kind.QUOTES, 10)
    first = huobi.rows.slice(0, 1).to_pylist()[0]
    assert first["ask_qty"] == pytest.approx(5494 * 100 / 8629.3) and first["bid_qty"] == pytest.approx(806 * 100 / 8629.2)

    for levels in (5, 25):
        [book] = load(folder / f"binance-futures_book_snapshot_{levels}_BTCUSDT.csv")
        assert (book.exchange, book.symbol, book.kind) == ("binanceusdm", "BTC/USDT:USDT", Kind.DEPTH)
        rows = book.rows
        assert rows.num_rows == 10 * 2 * levels and all(rows.column("is_snapshot").to_pylist())
        assert len(set(rows.column("update_id").to_pylist())) == 10  # one id per snapshot row
        assert rows.column("side").to_pylist().count(-1) == 10 * levels
        first = rows.slice(0, 1).to_pylist()[0]
        assert (first["side"], first["price"], first["qty"]) == (-1, 11657.08, 1.714)
        assert first["ts_ns"] == 1598918403696000 * 1000 and first["recv_ns"] == 1598918403810979 * 1000

    for batch in load(folder / "bitmex_trades_XBTUSD.csv") + load(folder / "huobi-dm-swap_quotes_BTC-USD.csv"):
        assert_schema(batch)


# --- 3-5. parquet, Binance depth CSV, ccxt JSON ------------------------------------------------


def test_binance_parquet(shared_data: Path) -> None:
    folder = shared_data / "binance_spot_btcusdt_20210108"
    assert detect_format(folder / "btcusdt-trades.parquet") == "binance_parquet"
    [trades] = load(folder / "btcusdt-trades.parquet")
    assert (trades.exchange, trades.symbol, trades.kind) == ("binance", "BTC/USDT", Kind.TRADES)
    assert_schema(trades)
    rows = trades.rows
    assert rows.num_rows == 2001 and rows.column("recv_ns").null_count == 2001
    side = rows.column("side").to_numpy()
    assert ((side == -1).sum(), (side == 1).sum()) == (914, 1087)  # "True" = buyer maker = taker sold
    ids = ints(trades, "trade_id")
    assert (np.diff(ids) == 1).all()
    ts = ints(trades, "ts_ns")
    assert ts.min() == utc_ns("2021-01-08 00:00:00.278") and ts.max() == utc_ns("2021-01-08 00:00:46.355")

    [quotes] = load(folder / "btcusdt-quotes.parquet")
    assert (quotes.exchange, quotes.symbol, quotes.kind, quotes.rows.num_rows) == ("binance", "BTC/USDT", Kind.QUOTES, 451)
    assert_schema(quotes)
    ts = ints(quotes, "ts_ns")
    assert ts.min() == utc_ns("2021-01-08 00:00:01.076") and ts.max() == utc_ns("2021-01-08 00:00:46.674")

    [relabelled] = load(folder / "btcusdt-trades.parquet", exchange="binanceusdm")
    assert (relabelled.exchange, relabelled.symbol) == ("binanceusdm", "BTC/USDT:USDT")
    [named] = load(folder / "btcusdt-trades.parquet", symbol="ETHUSDT")
    assert named.symbol == "ETH/USDT"


def test_binance_depth_csv(shared_data: Path) -> None:
    folder = shared_data / "binance_futures_btcusdt_depth_20221101"
    assert detect_format(folder / "btcusdt-depth-snap.csv") == "binance_depth_csv"
    [snap] = load(folder / "btcusdt-depth-snap.csv")
    assert (snap.exchange, snap.symbol, snap.kind) == ("binanceusdm", "BTC/USDT:USDT", Kind.DEPTH)
    assert_schema(snap)
    rows = snap.rows
    assert rows.num_rows == 100 and all(rows.column("is_snapshot").to_pylist())
    assert set(rows.column("side").to_pylist()) == {1}
    assert set(rows.column("update_id").to_pylist()) == {2098021528332}
    assert rows.column("prev_update_id").null_count == 100  # pu -1 in snapshots
    assert set(rows.column("ts_ns").to_pylist()) == {1667346579146 * MS}

    [update] = load(folder / "btcusdt-depth-update.csv")
    rows = update.rows
    assert rows.num_rows == 100 and not any(rows.column("is_snapshot").to_pylist())
    side = rows.column("side").to_pylist()
    assert (side.count(-1), side.count(1)) == (77, 23)
    first = rows.slice(0, 1).to_pylist()[0]
    assert first["update_id"] == 2098041696700 and first["first_update_id"] == 2098041693435
    assert first["prev_update_id"] == 2098041693400 and first["ts_ns"] == utc_ns("2022-11-01 23:59:59.939")


def test_ccxt_trades_json(shared_data: Path) -> None:
    path = shared_data / "binance_spot_xrpeth_trades_20191011" / "XRP_ETH-trades-ccxt.json.gz"
    assert detect_format(path) == "ccxt_trades_json"
    [batch] = load(path)
    assert (batch.exchange, batch.symbol, batch.kind) == ("binance", "XRP/ETH", Kind.TRADES)
    assert_schema(batch)
    assert_monotone_ish(batch)
    rows = batch.rows
    assert rows.num_rows == 12477
    assert (np.diff(ints(batch, "trade_id")) == 1).all()
    ts = ints(batch, "ts_ns")
    assert ts.min() == utc_ns("2019-10-11 00:00:11.620") and ts.max() == utc_ns("2019-10-13 11:19:28.844")
    raw = json.loads(gzip.decompress(path.read_bytes()))
    expected_side = [-1 if item["info"]["m"] else 1 for item in raw]  # buyer maker = taker sold
    assert rows.column("side").to_pylist() == expected_side
    assert rows.column("qty").to_pylist() == [item["amount"] for item in raw]


def test_non_tick_formats_are_refused_with_the_reason(shared_data: Path) -> None:
    bitfinex = shared_data / "bitfinex_btcusd_raw_book" / "bitfinex_tBTCUSD_R0_feed.json.gz"
    assert detect_format(bitfinex) == "bitfinex_raw_book"
    with pytest.raises(SourceError, match="has no timestamps, cannot be stored as ticks"):
        list(FileSource(bitfinex).batches())
    ohlcv = shared_data / "ohlcv" / "btc-perp-20211231-20220201_1m.csv"
    assert detect_format(ohlcv) == "ohlcv_csv"
    with pytest.raises(SourceError, match="bars .* are not ticks"):
        list(FileSource(ohlcv).batches())
    assert set(FORMATS) >= {"binance_ws_raw", "tardis_csv", "binance_parquet", "binance_depth_csv", "ccxt_trades_json"}


def test_directory_reads_every_supported_file(shared_data: Path) -> None:
    source = FileSource(shared_data / "tardis_format_samples")
    assert source.description == f"file:{shared_data / 'tardis_format_samples'}"
    batches = list(source.batches())
    assert len(batches) == 5 and sum(b.rows.num_rows for b in batches) == 10 + 15 + 10 + 500 + 100
    with pytest.raises(SourceError, match="no supported tick files"):
        list(FileSource(shared_data / "ohlcv").batches())


def test_format_is_detected_from_content_not_name(shared_data: Path, tmp_path: Path) -> None:
    disguised = tmp_path / "trades.csv"
    disguised.write_bytes((shared_data / "binance_ws_raw" / "spot_ethusdt_20240809.gz").read_bytes())
    assert detect_format(disguised) == "binance_ws_raw"
    plain = tmp_path / "capture.txt"
    plain.write_bytes(gzip.decompress(disguised.read_bytes()))
    [trades, quotes, depth] = load(plain)
    assert (trades.rows.num_rows, quotes.rows.num_rows, len(set(depth.rows.column("update_id").to_pylist()))) == (8409, 34681, 3036)


# --- crafted lines: pass-through, rejects, overrides -------------------------------------------

USDM_TRADE = '1723161255088176367 {"stream":"btcusdt@trade","data":{"e":"trade","E":1723161256322,"T":1723161256322,"s":"BTCUSDT","t":%d,"p":"%s","q":"0.006","X":"%s","m":%s}}'
USDM_QUOTE = '1723161255088169167 {"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":5123107839020,"s":"BTCUSDT","b":"%s","B":"2.507","a":"%s","A":"2.510","T":1723161256313,"E":1723161256313}}'
SPOT_ETH_TRADE = '1723161254087896568 {"stream":"ethusdt@trade","data":{"e":"trade","E":1723161255343,"s":"ETHUSDT","t":%d,"p":"2680.1","q":"0.5","T":1723161255342,"m":true,"M":true}}'


def test_insurance_fund_nan_and_crossed_rows_pass_through(tmp_path: Path) -> None:
    path = write_gz(
        tmp_path / "usdm.gz",
        [
            USDM_TRADE % (1, "61800.30", "MARKET", "false"),
            USDM_TRADE % (2, "61700.00", "INSURANCE_FUND", "true"),
            USDM_TRADE % (3, "NaN", "MARKET", "false"),
            USDM_QUOTE % ("61801.0", "61800.0"),  # crossed: bid > ask
        ],
    )
    kinds = by_kind(load(path))
    trades = kinds[Kind.TRADES].rows
    assert trades.column(EXEC_TYPE).to_pylist() == ["MARKET", "INSURANCE_FUND", "MARKET"]
    assert trades.column("side").to_pylist() == [1, -1, 1]
    assert np.isnan(trades.column("price").to_pylist()[2])
    quote = kinds[Kind.QUOTES].rows.to_pylist()[0]
    assert (quote["bid_px"], quote["ask_px"]) == (61801.0, 61800.0)
    from pipeline.data.quality import split_valid  # the rules that later quarantine them

    result = split_valid(Kind.TRADES, trades, "test", SECOND)
    assert result.valid.num_rows == 1
    assert any("INSURANCE_FUND" in reason for reason in result.quarantined.column("reason").to_pylist())


def test_unparseable_lines_max_bad_lines(tmp_path: Path) -> None:
    lines = [SPOT_ETH_TRADE % trade_id for trade_id in range(1, 6)]
    lines[2] = lines[2][:70]  # cut JSON on line 3
    path = write_gz(tmp_path / "spot.gz", lines)
    with pytest.raises(SourceError, match=r"spot\.gz: unparseable line 3: invalid JSON") as error:
        list(FileSource(path).batches())
    assert "\n" not in str(error.value) and "max_bad_lines=0" in str(error.value)
    [batch] = load(path, max_bad_lines=1)
    assert (batch.exchange, batch.symbol, batch.rows.num_rows) == ("binance", "ETH/USDT", 4)
    assert batch.rejects.num_rows == 1
    reject = batch.rejects.to_pylist()[0]
    assert reject["reason"].startswith("unparseable line 3: invalid JSON")
    assert reject["row"] == lines[2] and reject["source"] == f"file:{path}"


def test_bad_value_is_an_unparseable_line(tmp_path: Path) -> None:
    lines = [SPOT_ETH_TRADE % trade_id for trade_id in range(1, 5)]
    lines[1] = lines[1].replace('"q":"0.5"', '"q":"half"')
    path = write_gz(tmp_path / "spot.gz", lines)
    with pytest.raises(SourceError, match=r"unparseable line 2: bad q 'half'"):
        list(FileSource(path).batches())
    [batch] = load(path, max_bad_lines=1)
    assert batch.rows.column("trade_id").to_pylist() == [1, 3, 4]
    assert batch.rejects.column("row").to_pylist() == [lines[1]]


def test_rejects_go_to_the_batch_of_their_symbol(tmp_path: Path) -> None:
    lines = [
        USDM_TRADE % (1, "61800.30", "MARKET", "false"),
        SPOT_ETH_TRADE.replace("ETHUSDT", "ETHUSDT").replace('"X"', '"X"') % 7,
        '1723161254087896569 {"stream":"ethusdt@trade","data":{"e":"trade","s":"ETHUSDT","t":8',  # cut
        USDM_QUOTE % ("61800.0", "61800.1"),
    ]
    # mixed markets in one file: BTCUSDT (futures fields) and ETHUSDT (spot fields)
    batches = load(write_gz(tmp_path / "mixed.gz", lines), max_bad_lines=5)
    found = {(b.exchange, b.symbol, b.kind): b.rejects.num_rows for b in batches}
    assert found == {
        ("binanceusdm", "BTC/USDT:USDT", Kind.TRADES): 0,
        ("binanceusdm", "BTC/USDT:USDT", Kind.QUOTES): 0,
        ("binance", "ETH/USDT", Kind.TRADES): 1,
    }


def test_overrides_that_contradict_the_file_fail(shared_data: Path) -> None:
    path = shared_data / "tardis_format_samples" / "bitmex_trades_XBTUSD.csv"
    with pytest.raises(SourceError, match="holds exchange 'bitmex' but exchange='deribit'"):
        list(FileSource(path, exchange="deribit").batches())
    assert load(path, symbol="BTC/USD:BTC")[0].rows.num_rows == 10


# --- errors ------------------------------------------------------------------------------------


def expect_error(path: Path, pattern: str) -> str:
    iterator = FileSource(path).batches()
    with pytest.raises(SourceError, match=pattern) as error:
        next(iterator)  # fails before the first batch: nothing partial is ever returned
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    return message


def test_missing_file(tmp_path: Path) -> None:
    expect_error(tmp_path / "absent.gz", "no such file")
    with pytest.raises(SourceError, match="no such file"):
        detect_format(tmp_path / "absent.gz")


def test_truncated_gzip(shared_data: Path, tmp_path: Path) -> None:
    data = (shared_data / "binance_ws_raw" / "spot_ethusdt_20240808.gz").read_bytes()
    path = tmp_path / "half.gz"
    path.write_bytes(data[: len(data) // 2])
    assert detect_format(path) == "binance_ws_raw"  # the first lines are fine ...
    expect_error(path, r"truncated gzip \(Compressed file ended")  # ... the end is missing
    tiny = tmp_path / "tiny.gz"
    tiny.write_bytes(data[:100])
    expect_error(tiny, "truncated gzip")


def test_corrupt_and_unknown_files(tmp_path: Path) -> None:
    noise = np.random.default_rng(7).bytes(4096)
    assert not noise.startswith((b"\x1f\x8b", b"PAR1"))
    (tmp_path / "noise.gz").write_bytes(noise)
    expect_error(tmp_path / "noise.gz", r"unrecognised format \(binary data; line 1")
    (tmp_path / "noise2.gz").write_bytes(gzip.compress(noise))
    expect_error(tmp_path / "noise2.gz", r"unrecognised format \(gzip holding binary data; line 1")
    write_gz(tmp_path / "words.gz", ["hello world", "not a capture"])
    expect_error(tmp_path / "words.gz", r"unrecognised format .*line 1 .*hello world")
    (tmp_path / "image.png.gz").write_bytes(b"\x89PNG\r\n\x1a\n" + noise[:200])
    expect_error(tmp_path / "image.png.gz", r"unrecognised format \(a PNG image\)")
    (tmp_path / "empty.csv").write_bytes(b"")
    expect_error(tmp_path / "empty.csv", r"unrecognised format \(empty file\)")
    (tmp_path / "other.csv").write_text("when,what,how_much\n1,2,3\n")
    expect_error(tmp_path / "other.csv", r"unrecognised format \(CSV with unknown columns")
    (tmp_path / "markets.json").write_text('{"BTC/USDT": {}}')
    expect_error(tmp_path / "markets.json", "unrecognised format")


def test_capture_with_a_garbage_line_names_it(tmp_path: Path) -> None:
    lines = [SPOT_ETH_TRADE % trade_id for trade_id in range(1, 8)]
    lines[5] = "garbage without a timestamp"
    path = write_gz(tmp_path / "capture.gz", lines)
    message = expect_error(path, "unparseable line 6: not '<local_ns> <json>'")
    assert re.search(r"max_bad_lines=0", message)


def test_tardis_bad_row(tmp_path: Path, shared_data: Path) -> None:
    source = (shared_data / "tardis_binance_futures_btcusdt_20200222" / "trades.csv").read_text().splitlines()[:6]
    fields = source[4].split(",")
    fields[6] = "oops"  # the price
    source[4] = ",".join(fields)
    path = tmp_path / "trades.csv"
    path.write_text("\n".join(source) + "\n")
    expect_error(path, r"unparseable line 5: bad price 'oops'")
    [batch] = load(path, max_bad_lines=1)
    assert batch.rows.num_rows == 4 and batch.rejects.column("row").to_pylist() == [source[4]]


def spot_depth(recv: int, symbol: str, first: int, last: int, bids: str, asks: str) -> str:
    data = f'{{"e":"depthUpdate","E":{recv // MS + 1270},"s":"{symbol}","U":{first},"u":{last},"b":{bids},"a":{asks}}}'
    return f'{recv} {{"stream":"{symbol.lower()}@depth@100ms","data":{data}}}'


def test_snapshot_without_symbol_is_placed_by_update_ids(tmp_path: Path) -> None:
    t0 = 1723161254000000000
    lines = [
        spot_depth(t0, "BTCUSDT", 100, 110, '[["61000.1","1.5"]]', "[]"),
        spot_depth(t0 + 1 * MS, "ETHUSDT", 5000, 5004, '[["2680.1","2"]]', '[["2680.2","3"],["2680.3","0"]]'),
        f'{t0 + 2 * MS} {{"lastUpdateId":5005,"bids":[["2680.0","7"]],"asks":[["2681.0","8"]]}}',
        spot_depth(t0 + 3 * MS, "ETHUSDT", 5005, 5009, '[["2680.1","oops"]]', "[]"),
        spot_depth(t0 + 4 * MS, "ETHUSDT", 5010, 5012, "[]", '[["2680.4","1"]]'),
        spot_depth(t0 + 5 * MS, "BTCUSDT", 111, 120, "[]", '[["61000.2","0.5"]]'),
    ]
    path = write_gz(tmp_path / "two.gz", lines)
    with pytest.raises(SourceError, match="unparseable line 4: bad quantity 'oops'"):
        list(FileSource(path).batches())
    batches = {b.symbol: b for b in load(path, max_bad_lines=1)}
    assert set(batches) == {"BTC/USDT", "ETH/USDT"} and {b.kind for b in batches.values()} == {Kind.DEPTH}
    eth = batches["ETH/USDT"]
    assert eth.rows.column("update_id").to_pylist() == [5004, 5004, 5004, 5005, 5005, 5012]  # arrival order
    assert eth.rows.column("is_snapshot").to_pylist() == [False, False, False, True, True, False]
    assert eth.rows.column("side").to_pylist() == [1, -1, -1, 1, -1, -1]
    assert eth.rows.column("qty").to_pylist() == [2.0, 3.0, 0.0, 7.0, 8.0, 1.0]
    assert eth.rows.column("ts_ns").to_pylist()[3] == t0 + 2 * MS + 1270 * MS  # spot snapshot: recv + offset
    assert eth.rejects.column("reason").to_pylist() == ["unparseable line 4: bad quantity 'oops'"]
    assert eth.rejects.column("row").to_pylist() == [lines[3]]
    assert batches["BTC/USDT"].rows.num_rows == 2 and batches["BTC/USDT"].rejects.num_rows == 0


def test_mark_price_stream_becomes_funding(tmp_path: Path) -> None:
    line = (
        '1723161255000000000 {"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1723161256000,'
        '"s":"BTCUSDT","p":"61800.10","P":"61790.0","i":"61805.20","r":"0.00010000","T":1723190400000}}'
    )
    [funding] = load(write_gz(tmp_path / "mark.gz", [line, USDM_TRADE % (1, "61800.30", "MARKET", "false")]))[1:]
    assert (funding.exchange, funding.symbol, funding.kind) == ("binanceusdm", "BTC/USDT:USDT", Kind.FUNDING)
    assert funding.rows.to_pylist() == [
        {"ts_ns": 1723161256000 * MS, "recv_ns": None, "mark_px": 61800.10, "index_px": 61805.20,
         "funding_rate": 0.0001, "next_funding_ns": 1723190400000 * MS}
    ]


def test_symbol_override_may_be_a_market_id(tmp_path: Path) -> None:
    path = write_gz(tmp_path / "usdm.gz", [USDM_TRADE % (1, "61800.30", "MARKET", "false")])
    assert load(path, symbol="BTCUSDT")[0].symbol == "BTC/USDT:USDT"
    assert load(path, symbol="BTC/USDT:USDT", exchange="binanceusdm")[0].rows.num_rows == 1
    with pytest.raises(SourceError, match="holds symbol 'BTC/USDT:USDT' but symbol='ETHUSDT'"):
        load(path, symbol="ETHUSDT")
