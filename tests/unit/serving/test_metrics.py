import json
import math

import numpy as np
import pandas as pd
import pytest

from serving.metrics import (
    EQUITY_COLUMNS, FILL_COLUMNS, FUNDING_COLUMNS, HEADLINE, NS_PER_HOUR, NS_PER_S, TRIP_COLUMNS, Ledger, compare,
    round_trips, summarise, trade_list_hash,
)  # fmt: skip

T0 = 1_704_067_200_000_000_000  # 2024-01-01T00:00:00Z
BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"


def s(seconds: float) -> int:
    return T0 + int(seconds * NS_PER_S)


def fill(t, side, qty, price, fee, strategy="mm", regime="calm", symbol=BTC, liquidity="maker", cid=None):
    return {"ts_ns": s(t), "symbol": symbol, "client_id": cid or f"{symbol[:3]}-{t}-{side}", "side": side,
            "price": price, "qty": qty, "fee_usdt": fee, "liquidity": liquidity, "strategy": strategy,
            "regime": regime}  # fmt: skip


def fills_frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=FILL_COLUMNS)


def funding_frame(rows) -> pd.DataFrame:
    return pd.DataFrame([{"ts_ns": s(t), "symbol": sym, "rate": r, "amount_usdt": a} for t, sym, r, a in rows],
                        columns=FUNDING_COLUMNS)  # fmt: skip


def equity_frame(ts_ns, equity, position=0.0, mid=100.0, leverage=5.0, regime="calm") -> pd.DataFrame:
    n = len(ts_ns)
    position = np.broadcast_to(np.asarray(position, dtype=float), n)
    mid = np.broadcast_to(np.asarray(mid, dtype=float), n)
    return pd.DataFrame({"ts_ns": np.asarray(ts_ns, dtype=np.int64), "equity_usdt": np.asarray(equity, dtype=float),
                         "position_qty": position, "notional_usdt": np.abs(position) * mid,
                         "leverage": np.broadcast_to(leverage, n).astype(float), "mid": mid,
                         "regime": np.broadcast_to(np.asarray(regime, dtype=object), n)},
                        columns=EQUITY_COLUMNS)  # fmt: skip


def ledger(fills=(), equity=None, funding=(), initial=1_000.0, start=0.0, end=3_600.0, liquidations=0) -> Ledger:
    if equity is None:
        equity = equity_frame([s(start)], [initial])
    fills, funding = fills_frame(list(fills)), funding_frame(list(funding))
    return Ledger(initial, equity, fills, funding, liquidations, s(start), s(end))


# A long added to and closed in two parts; a short closed by a fill that flips to a long; that long
# closed; on ETH a short covered in two parts; on BTC a long still open at the end.
LONG = [fill(10, +1, 2.0, 100.0, 0.10), fill(20, +1, 1.0, 103.0, 0.05),  # cost (200 + 103) / 3 = 101
        fill(30, -1, 1.0, 105.0, 0.05), fill(40, -1, 2.0, 104.0, 0.10)]  # pnl 1*4 + 2*3 = 10
FLIP = [fill(100, -1, 1.0, 110.0, 0.20, strategy="mr", regime="volatile"),
        fill(200, +1, 3.0, 100.0, 0.60, strategy="mom", regime="trend"),  # closes 1 (pnl +10), opens 2
        fill(300, -1, 2.0, 99.0, 0.40, strategy="risk", regime="trend")]  # pnl 2 * -1 = -2
SHORT = [fill(50, -1, 1.0, 50.0, 0.02, symbol=ETH, strategy="mr", regime="volatile"),
         fill(60, +1, 0.5, 48.0, 0.01, symbol=ETH), fill(70, +1, 0.5, 49.0, 0.01, symbol=ETH)]  # pnl 1 + 0.5
OPEN = [fill(400, +1, 0.5, 101.0, 0.01)]
FILLS = LONG + FLIP + SHORT + OPEN  # fmt: skip


def test_round_trips_by_hand():
    trips = round_trips(fills_frame(FILLS))
    assert list(trips.columns) == TRIP_COLUMNS
    assert list(zip(trips["symbol"], trips["side"], trips["close_ns"], strict=True)) == [
        (BTC, 1, s(40)), (ETH, -1, s(70)), (BTC, -1, s(200)), (BTC, 1, s(300))]  # fmt: skip
    long, short, flipped_short, flipped_long = (trips.iloc[i] for i in range(4))

    assert long["open_ns"] == s(10) and long["qty"] == pytest.approx(3.0)
    assert long["entry"] == pytest.approx(101.0) and long["exit"] == pytest.approx((105 + 208) / 3)
    assert long["pnl_usdt"] == pytest.approx(10.0) and long["fees_usdt"] == pytest.approx(0.30)
    assert long["net_usdt"] == pytest.approx(9.70) and long["fills"] == 4

    assert short["entry"] == pytest.approx(50.0) and short["exit"] == pytest.approx(48.5)
    assert short["pnl_usdt"] == pytest.approx(1.5) and short["net_usdt"] == pytest.approx(1.5 - 0.04)

    # The flipping fill's fee is split by quantity: 1/3 closes the short, 2/3 opens the long.
    assert (flipped_short["qty"], flipped_short["entry"], flipped_short["exit"]) == pytest.approx((1.0, 110.0, 100.0))
    assert flipped_short["pnl_usdt"] == pytest.approx(10.0) and flipped_short["fees_usdt"] == pytest.approx(0.40)
    assert flipped_long["open_ns"] == s(200) and flipped_long["qty"] == pytest.approx(2.0)
    assert (flipped_long["entry"], flipped_long["exit"]) == pytest.approx((100.0, 99.0))
    assert flipped_long["pnl_usdt"] == pytest.approx(-2.0) and flipped_long["fees_usdt"] == pytest.approx(0.80)
    assert flipped_long["net_usdt"] == pytest.approx(-2.80)
    # strategy and regime are the opening fill's, even when a stop ("risk") closes the trip
    assert (flipped_short["strategy"], flipped_short["regime"]) == ("mr", "volatile")
    assert (flipped_long["strategy"], flipped_long["regime"]) == ("mom", "trend")


def test_round_trips_ignore_row_order_within_time_order_and_float_dust():
    shuffled = fills_frame(FILLS).sample(frac=1.0, random_state=3)
    pd.testing.assert_frame_equal(round_trips(shuffled), round_trips(fills_frame(FILLS)))
    dust = round_trips(fills_frame([fill(1, 1, 0.1, 10.0, 0.0), fill(2, 1, 0.2, 10.0, 0.0),
                                    fill(3, -1, 0.3, 11.0, 0.0)]))  # 0.1 + 0.2 != 0.3 in floats
    assert len(dust) == 1 and dust["pnl_usdt"].iloc[0] == pytest.approx(0.3)


def test_round_trips_reject_bad_fills_and_accept_none():
    with pytest.raises(ValueError, match="qty > 0"):
        round_trips(fills_frame([fill(1, 1, 0.0, 10.0, 0.0)]))
    empty = round_trips(fills_frame([]))
    assert empty.empty and list(empty.columns) == TRIP_COLUMNS


def test_funding_is_attributed_to_the_trip_that_held_it_and_counts_in_net():
    funding = [(25, BTC, 1e-4, -0.5),  # the first long paid
               (200, BTC, 1e-4, +0.3),  # at the flip: received, so the short's
               (200, BTC, 1e-4, -0.2),  # at the flip: paid, so the long's
               (65, ETH, -1e-4, -0.1),  # a short pays a negative rate
               (80, BTC, 1e-4, -7.0)]  # flat: no trip's, but in the total  # fmt: skip
    trips = round_trips(fills_frame(FILLS), funding_frame(funding))
    assert trips["funding_usdt"].tolist() == pytest.approx([-0.5, -0.1, 0.3, -0.2])
    assert trips["net_usdt"].tolist() == pytest.approx([9.7 - 0.5, 1.46 - 0.1, 9.6 + 0.3, -2.8 - 0.2])
    summary = summarise(ledger(FILLS, funding=funding))
    assert summary["funding_net_usdt"] == pytest.approx(-7.5)
    assert summary["round_trips_net_usdt"] == pytest.approx(9.2 + 1.36 + 9.9 - 3.0)


def test_trade_statistics_and_splits_by_strategy_and_regime():
    summary = summarise(ledger(FILLS))
    nets = [9.70, 1.46, 9.60, -2.80]
    assert summary["trades"] == 4 and summary["wins"] == 3 and summary["win_rate"] == pytest.approx(0.75)
    assert summary["profit_factor"] == pytest.approx((9.70 + 1.46 + 9.60) / 2.80)
    assert summary["avg_trade_usdt"] == pytest.approx(np.mean(nets))
    assert summary["best_usdt"] == pytest.approx(9.70) and summary["worst_usdt"] == pytest.approx(-2.80)
    assert summary["fees_paid_usdt"] == pytest.approx(sum(f["fee_usdt"] for f in FILLS))
    traded = sum(f["price"] * f["qty"] for f in FILLS)
    assert summary["traded_notional_usdt"] == pytest.approx(traded)
    assert summary["turnover"] == pytest.approx(traded / 1_000.0)
    assert summary["open_at_end"] == {BTC: pytest.approx(0.5)}
    assert summary["fills"] == len(FILLS) and summary["fills_by_liquidity"] == {"maker": len(FILLS)}

    by_strategy = summary["by_strategy"]
    assert set(by_strategy) == {"mm", "mr", "mom"}
    assert by_strategy["mm"]["trades"] == 1 and by_strategy["mm"]["net_usdt"] == pytest.approx(9.70)
    assert by_strategy["mr"]["trades"] == 2 and by_strategy["mr"]["net_usdt"] == pytest.approx(1.46 + 9.60)
    assert by_strategy["mom"]["win_rate"] == 0.0 and by_strategy["mom"]["profit_factor"] == 0.0
    assert by_strategy["mr"]["profit_factor"] is None  # no loss to divide by
    by_regime = summary["by_regime"]
    assert {k: v["trades"] for k, v in by_regime.items()} == {"calm": 1, "trend": 1, "volatile": 2}
    assert by_regime["volatile"]["net_usdt"] == pytest.approx(1.46 + 9.60)
    assert sum(v["net_usdt"] for v in by_regime.values()) == pytest.approx(sum(nets))
    assert by_regime["calm"]["time_pct"] == pytest.approx(100.0) and by_regime["trend"]["time_pct"] == 0.0


def test_net_pnl_is_the_equity_curve_and_drawdown_by_hand():
    curve = [1_000.0, 1_100.0, 990.0, 1_200.0, 900.0, 950.0]
    equity = equity_frame([s(60 * i) for i in range(len(curve))], curve)
    summary = summarise(ledger(equity=equity))
    assert summary["net_pnl_usdt"] == pytest.approx(-50.0) and summary["return_pct"] == pytest.approx(-5.0)
    assert summary["max_drawdown_usdt"] == pytest.approx(300.0)  # 1200 -> 900
    assert summary["max_drawdown_pct"] == pytest.approx(25.0)
    # Below the starting equity from the first sample on counts as drawdown too.
    below_start = summarise(ledger(equity=equity_frame([s(1)], [960.0])))
    assert below_start["max_drawdown_usdt"] == pytest.approx(40.0)
    assert below_start["max_drawdown_pct"] == pytest.approx(4.0)


def test_sharpe_and_sortino_hourly_against_numpy():
    rng = np.random.default_rng(7)
    hours = 30
    # a sample every 20 minutes: each hour's value is the sample at the hour, the others fill in
    ts = T0 + np.arange(1, hours * 3 + 1) * (NS_PER_HOUR // 3)
    curve = 1_000.0 * np.exp(np.cumsum(rng.normal(2e-4, 3e-3, len(ts))))
    end = T0 + hours * NS_PER_HOUR + NS_PER_HOUR // 2  # a trailing half hour is dropped
    led = Ledger(1_000.0, equity_frame(ts, curve), fills_frame([]), funding_frame([]), 0, T0, end)
    summary = summarise(led)
    hourly = np.concatenate([[1_000.0], curve[2::3]])
    r = hourly[1:] / hourly[:-1] - 1.0
    assert summary["return_periods"] == hours and summary["annualisation"].startswith("hourly returns x sqrt(24*365)")
    assert summary["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(24 * 365))
    assert summary["sortino"] == pytest.approx(r.mean() / math.sqrt(np.mean(np.minimum(r, 0.0) ** 2)) * math.sqrt(8760))


def test_short_window_falls_back_to_minutes_and_too_short_gives_none():
    ts = T0 + np.arange(0, 121) * 60 * NS_PER_S
    curve = 1_000.0 + np.sin(np.arange(121) / 5.0)
    led = Ledger(1_000.0, equity_frame(ts, curve), fills_frame([]), funding_frame([]), 0, T0, T0 + 2 * NS_PER_HOUR)
    summary = summarise(led)
    assert "per-minute" in summary["annualisation"] and summary["return_periods"] == 120
    r = curve[1:] / curve[:-1] - 1.0
    assert summary["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(24 * 365 * 60))

    tiny = summarise(ledger(end=90.0))  # one whole minute: one return
    assert tiny["sharpe"] is None and tiny["sortino"] is None and tiny["return_periods"] == 1
    flat = summarise(ledger(end=10 * 3_600.0))  # constant equity: no dispersion
    assert flat["return_periods"] == 10 and flat["sharpe"] is None and flat["sortino"] is None


def test_exposure_and_leverage_are_time_weighted_from_the_samples():
    # flat for 10 min, long 1 @ 100 (notional 100 on equity 1000) for 20 min, flat for the last 30
    equity = equity_frame([s(0), s(600), s(1_800)], [1_000.0] * 3, position=[0.0, 1.0, 0.0],
                          leverage=[3.0, 7.0, 9.0])  # fmt: skip
    summary = summarise(ledger(equity=equity, end=3_600.0, liquidations=2))
    assert summary["exposure_time_pct"] == pytest.approx(100.0 / 3)
    assert summary["avg_notional_to_equity"] == pytest.approx(0.1 / 3)
    assert summary["max_notional_to_equity"] == pytest.approx(0.1)
    assert summary["max_leverage_used"] == 7.0  # the leverage in force while a position was held
    assert summary["liquidations"] == 2


def test_trade_list_hash_is_stable_and_sensitive():
    frame = fills_frame(FILLS)
    first = trade_list_hash(frame)
    assert first == trade_list_hash(fills_frame(FILLS)) == trade_list_hash(frame.sample(frac=1.0, random_state=1))
    assert len(first) == 64 and summarise(ledger(FILLS))["trade_list_hash"] == first
    noise = frame.copy()
    noise.loc[0, "fee_usdt"] += 1e-12  # below the fee's rounding
    assert trade_list_hash(noise) == first
    for column, value in [("price", 100.01), ("qty", 2.001), ("fee_usdt", 0.11), ("side", -1), ("ts_ns", s(11)),
                          ("client_id", "other")]:  # fmt: skip
        changed = frame.copy()
        changed.loc[0, column] = value
        assert trade_list_hash(changed) != first, column
    assert trade_list_hash(fills_frame([])) != first


def test_zero_trades_gives_a_json_ready_summary():
    summary = summarise(ledger(end=7_200.0))
    json.dumps(summary, allow_nan=False)
    assert summary["trades"] == 0 and summary["win_rate"] is None and summary["profit_factor"] is None
    assert summary["net_pnl_usdt"] == 0.0 and summary["turnover"] == 0.0 and summary["fees_paid_usdt"] == 0.0
    assert summary["exposure_time_pct"] == 0.0 and summary["max_leverage_used"] is None
    assert summary["by_strategy"] == {} and summary["by_regime"]["calm"]["trades"] == 0
    # a runner may hand frames without columns when nothing happened
    bare = Ledger(1_000.0, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), 0, T0, T0 + NS_PER_HOUR)
    assert summarise(bare)["trades"] == 0 and json.dumps(summarise(bare), allow_nan=False)


def test_every_summary_float_is_finite_or_none():
    def walk(value):
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, float):
            assert math.isfinite(value)

    walk(summarise(ledger(FILLS, funding=[(25, BTC, 1e-4, -0.5)])))


def test_compare_puts_runs_side_by_side():
    run = summarise(ledger(FILLS))
    table = compare({"model": run, "flat": summarise(ledger()), "no-model": {"net_pnl_usdt": -3.0}})
    assert list(table.columns) == ["model", "flat", "no-model"] and list(table.index) == HEADLINE
    assert table.loc["trades", "model"] == 4 and table.loc["trades", "flat"] == 0
    assert table.loc["net_pnl_usdt", "no-model"] == -3.0 and np.isnan(table.loc["sharpe", "no-model"])
    assert np.isnan(table.loc["win_rate", "flat"])  # None in the summary
