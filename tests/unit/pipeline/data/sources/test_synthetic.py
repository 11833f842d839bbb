"""The market simulator: determinism, schema, book and tape invariants, realism, and its signal."""

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest

from pipeline.config import SyntheticSourceConfig
from pipeline.data.schemas import QUOTES, TRADES, Kind
from pipeline.data.sources.synthetic import SyntheticSource, epoch_ns, simulate, symbol_seed

SYMBOL = "BTC/USDT:USDT"
START = datetime(2024, 1, 1, tzinfo=timezone.utc)
START_NS = 1_704_067_200_000_000_000
EVENTS = 200_000
HORIZON_QUOTES = 37  # ~50 events: quotes are ~3/4 of the events


def tables(seed=7, ticks=EVENTS, symbols=(SYMBOL,), **config):
    source = SyntheticSource(SyntheticSourceConfig(seed=seed, ticks=ticks, start=START, **config), symbols)
    return list(source.batches())


@pytest.fixture(scope="module")
def tape():
    """200k events of the default BTC-like market: (trades, quotes) as dicts of numpy columns."""
    trades, quotes = tables()
    return _numpy(trades.rows), _numpy(quotes.rows)


def _numpy(table: pa.Table) -> dict[str, np.ndarray]:
    return {name: table.column(name).to_numpy() for name in table.column_names}


def log_mid(quotes):
    return np.log((quotes["bid_px"] + quotes["ask_px"]) / 2)


def imbalance_at_quotes(trades, quotes, n_trades):
    """Signed-volume imbalance of the last n trades before each quote (NaN before n trades)."""
    signed = np.concatenate(([0.0], np.cumsum(trades["side"] * trades["qty"])))
    volume = np.concatenate(([0.0], np.cumsum(trades["qty"])))
    seen = np.searchsorted(trades["ts_ns"], quotes["ts_ns"])
    first = np.maximum(seen - n_trades, 0)
    value = (signed[seen] - signed[first]) / np.maximum(volume[seen] - volume[first], 1e-12)
    return np.where(seen >= n_trades, value, np.nan)


def forward(values, steps):
    out = np.full(len(values), np.nan)
    out[:-steps] = values[steps:] - values[:-steps]
    return out


def lagged(values, steps):
    out = np.full(len(values), np.nan)
    out[steps:] = values[:-steps]
    return out


def corr(a, b):
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def per_second_returns(quotes):
    """Log mid returns between the last quotes of consecutive seconds."""
    second = (quotes["ts_ns"] - quotes["ts_ns"][0]) // 10**9
    last = np.flatnonzero(np.diff(second) != 0)
    return np.diff(log_mid(quotes)[last])


def test_one_trades_and_one_quotes_batch_per_symbol_in_the_schemas():
    batches = tables(ticks=3_000, symbols=(SYMBOL, "ETH/USDT:USDT"))
    assert [(b.exchange, b.symbol, b.kind) for b in batches] == [
        ("synthetic", SYMBOL, Kind.TRADES),
        ("synthetic", SYMBOL, Kind.QUOTES),
        ("synthetic", "ETH/USDT:USDT", Kind.TRADES),
        ("synthetic", "ETH/USDT:USDT", Kind.QUOTES),
    ]
    for trades, quotes in (batches[:2], batches[2:]):
        assert trades.rows.schema.equals(TRADES) and quotes.rows.schema.equals(QUOTES)
        assert trades.rows.num_rows + quotes.rows.num_rows == 3_000
        assert trades.rejects.num_rows == quotes.rejects.num_rows == 0
    assert not batches[0].rows.equals(batches[2].rows)  # each symbol has its own stream
    source = SyntheticSource(SyntheticSourceConfig(seed=11), (SYMBOL,), exchange="binanceusdm")
    assert source.description == "synthetic:seed=11"


def test_same_seed_is_bit_identical_and_another_seed_differs():
    first, again, other = tables(ticks=5_000), tables(ticks=5_000), tables(seed=8, ticks=5_000)
    for a, b, c in zip(first, again, other):
        assert a.rows.equals(b.rows)
        assert not a.rows.equals(c.rows)


def test_seeds_and_start_do_not_depend_on_the_process():
    # blake2b, not the per-process salted hash(): a fixed value catches a switch to hash().
    assert symbol_seed(7, SYMBOL) == 15722908856562208717
    assert symbol_seed(7, SYMBOL) != symbol_seed(7, "ETH/USDT:USDT") != symbol_seed(8, SYMBOL)
    assert epoch_ns(START) == START_NS
    assert epoch_ns(datetime(2024, 1, 1, 0, 0, 0, 123456)) == START_NS + 123_456_000  # naive = UTC


def test_timestamps_and_ids_strictly_increase_and_receipt_lags_by_milliseconds(tape):
    trades, quotes = tape
    for rows, id_name in ((trades, "trade_id"), (quotes, "update_id")):
        assert np.all(np.diff(rows["ts_ns"]) > 0)
        assert np.all(np.diff(rows[id_name]) > 0)
        latency = rows["recv_ns"] - rows["ts_ns"]
        assert latency.min() >= 1_000_000 and latency.max() <= 5_000_000
    assert np.all(np.diff(trades["trade_id"]) == 1)  # Binance trade ids have no gaps
    merged = np.concatenate((trades["ts_ns"], quotes["ts_ns"]))
    assert np.unique(merged).size == merged.size  # one event at a time
    assert quotes["ts_ns"][0] > START_NS and quotes["ts_ns"][0] < trades["ts_ns"][0]  # a book first


def test_quotes_are_never_crossed_and_prices_and_sizes_sit_on_their_grids(tape):
    trades, quotes = tape
    bid, ask = quotes["bid_px"], quotes["ask_px"]
    assert np.all(bid > 0) and np.all(bid < ask)
    for price in (bid, ask, trades["price"]):
        ticks = np.round(price * 10)
        assert np.array_equal(ticks / 10, price)  # on the 0.1 grid, as the decimal would parse
    for qty in (trades["qty"], quotes["bid_qty"], quotes["ask_qty"]):
        lots = np.round(qty * 1000)
        assert lots.min() >= 1 and np.array_equal(lots / 1000, qty)  # 0.001 BTC lots
    spread_ticks = np.round((ask - bid) * 10)
    assert 0.85 < np.mean(spread_ticks == 1) < 0.98  # mostly one tick, like the BTC perp


@pytest.mark.parametrize(("start_price", "tick_size"), [(3_000.0, 0.01), (150.0, 0.005), (60_000.0, 0.5)])
def test_other_tick_sizes_stay_on_their_grid(start_price, tick_size):
    trades, quotes = simulate(3, 20_000, START_NS, start_price, tick_size)
    for price in (trades[3], quotes[3], quotes[5]):
        ticks = price / tick_size
        assert np.allclose(ticks, np.round(ticks), rtol=0, atol=1e-6)
    assert np.all(quotes[3] < quotes[5])
    assert abs(np.median(quotes[3]) / start_price - 1) < 0.2


def test_trades_execute_at_the_prevailing_bid_or_ask(tape):
    trades, quotes = tape
    book = np.searchsorted(quotes["ts_ns"], trades["ts_ns"]) - 1
    assert book.min() >= 0
    touch = np.where(trades["side"] == 1, quotes["ask_px"][book], quotes["bid_px"][book])
    assert np.array_equal(trades["price"], touch)
    assert set(np.unique(trades["side"])) == {-1, 1}
    assert 0.4 < np.mean(trades["side"] == 1) < 0.6
    # an order's fills share its side: trade signs persist (0.79 on the real BTC perp capture)
    assert corr(trades["side"][:-1].astype(float), trades["side"][1:].astype(float)) > 0.5


def test_quotes_outnumber_trades_and_activity_is_a_busy_perp(tape):
    trades, quotes = tape
    assert 2.0 < len(quotes["ts_ns"]) / len(trades["ts_ns"]) < 4.0
    span_s = (quotes["ts_ns"][-1] - quotes["ts_ns"][0]) / 1e9
    assert 5 < EVENTS / span_s < 50
    notional = trades["price"] * trades["qty"]
    median = np.median(notional)
    assert 300 < median < 3_000 and np.percentile(notional, 99.9) > 100 * median  # blocks happen


def test_regimes_make_volatility_and_activity_vary_across_windows(tape):
    trades, quotes = tape
    window = (quotes["ts_ns"] - quotes["ts_ns"][0]) // (300 * 10**9)  # 5-minute windows
    full = window < window[-1]
    mid_moves = np.diff(log_mid(quotes))[full[1:]]
    realised_vol = np.sqrt(np.bincount(window[1:][full[1:]], weights=mid_moves**2))
    # 2.1x and 4.6x here; 1.2-1.4x with the regimes made alike or seconds long
    assert np.percentile(realised_vol, 90) > 1.7 * np.percentile(realised_vol, 10)
    quotes_per_window = np.bincount(window[full])
    assert np.percentile(quotes_per_window, 95) > 2.5 * np.percentile(quotes_per_window, 5)
    annualised = per_second_returns(quotes).std() * np.sqrt(365 * 86_400)
    assert 0.2 < annualised < 1.5  # BTC-like


def test_returns_are_heavy_tailed_and_volatility_clusters_within_regimes(tape):
    _, quotes = tape
    returns = per_second_returns(quotes)
    kurtosis = np.mean((returns - returns.mean()) ** 4) / returns.var() ** 2
    assert kurtosis > 5
    assert corr(np.abs(returns[:-1]), np.abs(returns[1:])) > 0.1
    # Standardised by a 5-minute rolling RMS, regime mixing is gone: the tails left come from the
    # GARCH multiplier and the shock mixture (~5-7 on 16 seeds; <=4.3 without them).
    rms = np.sqrt(np.convolve(returns**2, np.ones(300) / 300, mode="same"))
    local = (returns / rms)[300:-300]
    assert np.mean(local**4) / np.mean(local**2) ** 2 > 4.5


def test_signed_volume_imbalance_modestly_predicts_the_next_50_events_and_placebos_do_not(tape):
    trades, quotes = tape
    imbalance = imbalance_at_quotes(trades, quotes, n_trades=10)
    future = forward(log_mid(quotes), HORIZON_QUOTES)
    signal = corr(imbalance, future)
    assert 0.03 < signal < 0.15
    # the information is short-lived: the same feature 1,000 quotes old predicts nothing
    assert abs(corr(lagged(imbalance, 1_000), future)) < 0.045
    shuffled = imbalance.copy()
    known = np.isfinite(shuffled)
    shuffled[known] = np.random.default_rng(0).permutation(shuffled[known])
    assert abs(corr(shuffled, future)) < 0.015


def test_simulate_handles_tiny_runs_and_rejects_bad_arguments():
    trades, quotes = simulate(1, 0, START_NS, 100.0, 0.01)
    assert [len(a) for a in trades + quotes] == [0] * 13
    trades, quotes = simulate(1, 1, START_NS, 100.0, 0.01)
    assert len(trades[0]) == 0 and len(quotes[0]) == 1  # the first event is always a quote
    assert trades[5].dtype == np.int8 and quotes[2].dtype == np.int64
    with pytest.raises(ValueError):
        simulate(1, -1, START_NS, 100.0, 0.01)
    with pytest.raises(ValueError):
        simulate(1, 10, START_NS, 100.0, 0.0)
