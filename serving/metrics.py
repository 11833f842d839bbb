"""What a backtest's ledger says: round trips, headline metrics, and runs side by side.

Pure functions of a ``Ledger`` (no I/O). Money is USDT, time is event time in integer ns. A round
trip runs from flat back to flat, or to a flip (which closes one trip and opens the next), per
symbol, with average-cost accounting, as ``serving/portfolio.py`` books positions; it counts as a
win when its net (fees and funding in) is positive. Every float in ``summarise``'s dict is finite
or None, so it goes to JSON (MLflow, the report) unchanged.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

NS_PER_S = 1_000_000_000
NS_PER_MINUTE = 60 * NS_PER_S
NS_PER_HOUR = 3_600 * NS_PER_S
HOURS_PER_YEAR = 24 * 365  # crypto perpetuals trade around the clock
# Fewer whole hours than this and Sharpe/Sortino come from per-minute returns instead.
MIN_HOURLY_PERIODS = 6
# The trade-list hash rounds the fee to this many decimals, and prices and quantities to this many
# significant digits, so float noise below what a venue can express does not change it.
HASH_FEE_DECIMALS = 8
HASH_SIGNIFICANT_DIGITS = 10
HASH_FORMAT = "autoscalp-fills-v1"
# A close within this fraction of the position closes it (sums of float fills are not exact).
FLAT_TOLERANCE = 1e-9

# The ledger's frames, as the runner builds them.
EQUITY_COLUMNS = ["ts_ns", "equity_usdt", "position_qty", "notional_usdt", "leverage", "mid", "regime"]
FILL_COLUMNS = ["ts_ns", "symbol", "client_id", "side", "price", "qty", "fee_usdt", "liquidity", "strategy", "regime"]
FUNDING_COLUMNS = ["ts_ns", "symbol", "rate", "amount_usdt"]
TRIP_COLUMNS = [
    "symbol", "open_ns", "close_ns", "side", "qty", "entry", "exit", "pnl_usdt", "fees_usdt",
    "funding_usdt", "net_usdt", "strategy", "regime", "fills", "liquidated",
]  # fmt: skip
# The rows of ``compare``: what a reader looks at first.
HEADLINE = [
    "net_pnl_usdt", "return_pct", "sharpe", "sortino", "max_drawdown_pct", "max_drawdown_usdt",
    "trades", "win_rate", "profit_factor", "avg_trade_usdt", "turnover", "fees_paid_usdt",
    "funding_net_usdt", "exposure_time_pct", "liquidations", "max_leverage_used",
]  # fmt: skip


@dataclass(frozen=True)
class Ledger:
    """What one backtest produced, in event time."""
    initial_equity_usdt: float
    equity: pd.DataFrame   # one row per sample (the runner samples at most once per second of event time, and at every fill):
                           # ts_ns int64, equity_usdt (wallet + unrealised at mid), position_qty (signed base),
                           # notional_usdt (abs position x mid), leverage (engine's leverage in force), mid, regime (str)
    fills: pd.DataFrame    # ts_ns, symbol, client_id, side (+1/-1), price, qty, fee_usdt (negative = rebate),
                           # liquidity ("maker"|"taker"|"liquidation"), strategy (str tag, "risk" for stops), regime (str)
    funding: pd.DataFrame  # ts_ns, symbol, rate, amount_usdt (positive = received)
    liquidations: int
    start_ns: int
    end_ns: int


# ---- round trips ---------------------------------------------------------------------------------


def round_trips(fills: pd.DataFrame, funding: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per closed round trip (``TRIP_COLUMNS``), ordered by close time then symbol.

    ``qty`` is the largest absolute position, ``entry``/``exit`` the average prices of the fills that
    grew/shrank it, ``pnl_usdt`` the gross average-cost PnL. A fill that flips the position splits
    its fee pro rata between the trip it closes and the one it opens. Funding paid or received
    while a trip was open (``open_ns <= ts_ns <= close_ns``) is attributed to it; when two trips
    touch that instant (a flip), to the one on the side that pays the rate's sign (a long pays a
    positive rate). A position still open at the end is no round trip: it is left out.
    """
    if len(fills) == 0:
        return _trips_frame([])
    if not ((fills["qty"] > 0).all() and fills["side"].isin((1, -1)).all()):
        raise ValueError("every fill needs qty > 0 and side +1 or -1")
    order = np.lexsort((np.arange(len(fills)), fills["ts_ns"].to_numpy()))  # by time, stable
    ordered = fills.iloc[order]
    rows: list[dict] = []
    for symbol, group in ordered.groupby("symbol", sort=True):
        rows += _symbol_trips(str(symbol), group)
    trips = _trips_frame(rows)
    if funding is not None and len(funding) and len(trips):
        trips["funding_usdt"] = _attribute_funding(trips, funding)
    trips["net_usdt"] = trips["pnl_usdt"] - trips["fees_usdt"] + trips["funding_usdt"]
    return trips.sort_values(["close_ns", "symbol"], kind="stable").reset_index(drop=True)


def _symbol_trips(symbol: str, fills: pd.DataFrame) -> list[dict]:
    ts, sides = fills["ts_ns"].to_numpy(np.int64), fills["side"].to_numpy(np.int64)
    prices, qtys = fills["price"].to_numpy(np.float64), fills["qty"].to_numpy(np.float64)
    fees = fills["fee_usdt"].to_numpy(np.float64)
    strategies, regimes = fills["strategy"].astype(str).tolist(), fills["regime"].astype(str).tolist()
    liquidations = (fills["liquidity"].astype(str) == "liquidation").tolist()
    trips: list[dict] = []
    trip: dict | None = None
    held, cost = 0.0, 0.0  # signed position, average entry price

    def open_trip(i: int, side: int) -> dict:
        return {"symbol": symbol, "open_ns": int(ts[i]), "side": side, "qty": 0.0, "entry_value": 0.0,
                "entry_qty": 0.0, "exit_value": 0.0, "exit_qty": 0.0, "pnl_usdt": 0.0, "fees_usdt": 0.0,
                "strategy": strategies[i], "regime": regimes[i], "fills": 0, "liquidated": False}  # fmt: skip

    for i in range(len(ts)):
        side, qty, price, fee = int(sides[i]), float(qtys[i]), float(prices[i]), float(fees[i])
        if trip is None:
            trip = open_trip(i, side)
        trip["fills"] += 1
        trip["liquidated"] |= liquidations[i]
        if held == 0.0 or (held > 0.0) == (side > 0):
            cost = (abs(held) * cost + qty * price) / (abs(held) + qty)
            held += side * qty
            trip["entry_value"] += qty * price
            trip["entry_qty"] += qty
            trip["fees_usdt"] += fee
            trip["qty"] = max(trip["qty"], abs(held))
            continue
        closing = min(qty, abs(held))
        if closing >= abs(held) * (1.0 - FLAT_TOLERANCE):
            closing = abs(held)
        rest = qty - closing
        if rest <= qty * FLAT_TOLERANCE:
            rest = 0.0
        share = closing / qty if rest > 0.0 else 1.0  # of the fee, the part that closes
        trip["pnl_usdt"] += closing * (price - cost) * (1.0 if held > 0.0 else -1.0)
        trip["exit_value"] += closing * price
        trip["exit_qty"] += closing
        trip["fees_usdt"] += fee * share
        if closing < abs(held):
            held -= closing if held > 0.0 else -closing
            continue
        trip["close_ns"] = int(ts[i])
        trips.append(_finish(trip))
        held, cost, trip = 0.0, 0.0, None
        if rest > 0.0:  # a flip: the rest opens the next trip at this fill's price
            trip = open_trip(i, side)
            trip["fills"], trip["liquidated"] = 1, liquidations[i]
            held, cost = side * rest, price
            trip["entry_value"], trip["entry_qty"], trip["qty"] = rest * price, rest, rest
            trip["fees_usdt"] = fee * (1.0 - share)
    return trips


def _finish(trip: dict) -> dict:
    entry_value, entry_qty = trip.pop("entry_value"), trip.pop("entry_qty")
    exit_value, exit_qty = trip.pop("exit_value"), trip.pop("exit_qty")
    trip["entry"] = entry_value / entry_qty
    trip["exit"] = exit_value / exit_qty
    trip["funding_usdt"] = 0.0
    return trip


def _trips_frame(rows: list[dict]) -> pd.DataFrame:
    trips = pd.DataFrame(rows, columns=TRIP_COLUMNS)
    dtypes = {"open_ns": "int64", "close_ns": "int64", "side": "int64", "fills": "int64", "liquidated": bool}
    floats = ["qty", "entry", "exit", "pnl_usdt", "fees_usdt", "funding_usdt", "net_usdt"]
    return trips.astype({**dtypes, **dict.fromkeys(floats, "float64"), "symbol": object, "strategy": object,
                         "regime": object})  # fmt: skip


def _attribute_funding(trips: pd.DataFrame, funding: pd.DataFrame) -> np.ndarray:
    attributed = np.zeros(len(trips))
    for symbol, payments in funding.groupby("symbol", sort=False):
        rows = np.flatnonzero((trips["symbol"] == symbol).to_numpy())
        if not len(rows):
            continue
        rows = rows[np.argsort(trips["open_ns"].to_numpy()[rows], kind="stable")]
        opens, closes = trips["open_ns"].to_numpy()[rows], trips["close_ns"].to_numpy()[rows]
        sides = trips["side"].to_numpy()[rows]
        for t, rate, amount in zip(payments["ts_ns"], payments["rate"], payments["amount_usdt"], strict=True):
            # Trips of one symbol do not overlap, so those open at t are a contiguous run.
            first, last = np.searchsorted(closes, t, "left"), np.searchsorted(opens, t, "right")
            if first >= last:
                continue
            payer = -int(np.sign(rate * amount))  # +1: a long paid or received this
            matching = [j for j in range(first, last) if sides[j] == payer]
            attributed[rows[matching[0] if matching else first]] += amount
    return attributed


# ---- trade statistics ------------------------------------------------------------------------------


def trade_stats(trips: pd.DataFrame) -> dict:
    """Counts, win rate, profit factor and averages of some round trips (net of fees and funding)."""
    net = trips["net_usdt"].to_numpy(np.float64)
    wins, losses = net[net > 0.0], net[net < 0.0]
    held_s = (trips["close_ns"].to_numpy() - trips["open_ns"].to_numpy()) / NS_PER_S
    return {
        "trades": len(net),
        "wins": len(wins),
        "win_rate": _finite(len(wins) / len(net)) if len(net) else None,
        "net_usdt": float(net.sum()),
        "gross_pnl_usdt": float(trips["pnl_usdt"].sum()),
        "fees_usdt": float(trips["fees_usdt"].sum()),
        "funding_usdt": float(trips["funding_usdt"].sum()),
        "avg_trade_usdt": _finite(net.mean()) if len(net) else None,
        "avg_win_usdt": _finite(wins.mean()) if len(wins) else None,
        "avg_loss_usdt": _finite(losses.mean()) if len(losses) else None,
        # None when there is no loss to divide by (infinite) or no trade at all
        "profit_factor": _finite(wins.sum() / -losses.sum()) if len(losses) else None,
        "best_usdt": _finite(net.max()) if len(net) else None,
        "worst_usdt": _finite(net.min()) if len(net) else None,
        "avg_hold_s": _finite(held_s.mean()) if len(net) else None,
    }


# ---- the equity curve ------------------------------------------------------------------------------


def drawdown(equity_usdt: np.ndarray, initial_equity_usdt: float) -> tuple[np.ndarray, np.ndarray]:
    """USDT and fraction below the running peak (the initial equity counts as the first peak)."""
    equity = np.asarray(equity_usdt, dtype=np.float64)
    peak = np.maximum.accumulate(np.concatenate([[initial_equity_usdt], equity]))[1:]
    below = peak - equity
    return below, np.divide(below, peak, out=np.zeros_like(below), where=peak > 0)


def period_returns(ledger: Ledger, period_ns: int) -> np.ndarray:
    """Simple returns of the equity on a grid ``start_ns + k * period_ns`` (the last sample at or
    before each grid point, the initial equity before the first sample); a trailing partial period is
    dropped."""
    periods = (ledger.end_ns - ledger.start_ns) // period_ns
    if periods < 1:
        return np.empty(0)
    grid = ledger.start_ns + period_ns * np.arange(periods + 1, dtype=np.int64)
    ts, equity = _equity_arrays(ledger)
    known = np.concatenate([[ledger.initial_equity_usdt], equity])
    values = known[np.searchsorted(ts, grid, "right")]
    with np.errstate(divide="ignore", invalid="ignore"):
        return values[1:] / values[:-1] - 1.0


def risk_adjusted(ledger: Ledger) -> dict:
    """Sharpe and Sortino, annualised, from hourly returns (per-minute ones in a short window)."""
    hourly = (ledger.end_ns - ledger.start_ns) // NS_PER_HOUR >= MIN_HOURLY_PERIODS
    period_ns, per_year, name = (
        (NS_PER_HOUR, HOURS_PER_YEAR, "hourly returns x sqrt(24*365)") if hourly
        else (NS_PER_MINUTE, HOURS_PER_YEAR * 60,
              f"per-minute returns x sqrt(24*365*60) (window under {MIN_HOURLY_PERIODS} h)")
    )  # fmt: skip
    returns = period_returns(ledger, period_ns)
    out = {"sharpe": None, "sortino": None, "return_periods": len(returns),
           "annualisation": f"{name}; risk-free 0; Sharpe: mean / sample std (ddof=1); "
                            "Sortino: mean / sqrt(mean(min(r, 0)^2))"}  # fmt: skip
    if len(returns) < 2 or not np.isfinite(returns).all():
        return out
    scale = math.sqrt(per_year)
    std = returns.std(ddof=1)
    downside = math.sqrt(np.mean(np.minimum(returns, 0.0) ** 2))
    out["sharpe"] = _finite(returns.mean() / std * scale) if std > 0 else None
    out["sortino"] = _finite(returns.mean() / downside * scale) if downside > 0 else None
    return out


def exposure(ledger: Ledger) -> dict:
    """Time-weighted: each equity sample holds until the next one (the runner samples at every
    fill, so position changes are exact); flat before the first sample."""
    out = {"exposure_time_pct": None, "avg_notional_to_equity": None, "max_notional_to_equity": None,
           "max_leverage_used": None}  # fmt: skip
    window = ledger.end_ns - ledger.start_ns
    if len(ledger.equity) == 0 or window <= 0:
        return out
    equity = ledger.equity.sort_values("ts_ns", kind="stable")
    ts = np.clip(equity["ts_ns"].to_numpy(np.int64), ledger.start_ns, ledger.end_ns)
    held = np.diff(np.append(ts, ledger.end_ns)).astype(np.float64)
    exposed = equity["position_qty"].to_numpy(np.float64) != 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = equity["notional_usdt"].to_numpy(np.float64) / equity["equity_usdt"].to_numpy(np.float64)
    ratio = np.where(exposed & np.isfinite(ratio), ratio, 0.0)
    out["exposure_time_pct"] = _finite(held[exposed].sum() / window * 100.0)
    out["avg_notional_to_equity"] = _finite((held * ratio).sum() / window)
    out["max_notional_to_equity"] = _finite(ratio.max())
    if exposed.any():
        out["max_leverage_used"] = _finite(equity["leverage"].to_numpy(np.float64)[exposed].max())
    return out


def regime_time_pct(ledger: Ledger) -> dict[str, float]:
    """Share of the window spent in each regime, by the equity samples (each holds until the next)."""
    window = ledger.end_ns - ledger.start_ns
    if len(ledger.equity) == 0 or window <= 0:
        return {}
    equity = ledger.equity.sort_values("ts_ns", kind="stable")
    ts = np.clip(equity["ts_ns"].to_numpy(np.int64), ledger.start_ns, ledger.end_ns)
    held = pd.Series(np.diff(np.append(ts, ledger.end_ns)), index=equity["regime"].astype(str).to_numpy())
    return {str(k): float(v / window * 100.0) for k, v in held.groupby(level=0, sort=True).sum().items()}


# ---- the summary ----------------------------------------------------------------------------------


def summarise(ledger: Ledger) -> dict:
    """Headline metrics, trade statistics per strategy and per regime, and the trade-list hash."""
    initial = float(ledger.initial_equity_usdt)
    ts, equity = _equity_arrays(ledger)
    final = float(equity[-1]) if len(equity) else initial
    below_usdt, below_frac = drawdown(equity, initial)
    trips = round_trips(ledger.fills, ledger.funding)
    fills = ledger.fills
    traded_usdt = float((fills["price"] * fills["qty"]).abs().sum()) if len(fills) else 0.0
    stats = trade_stats(trips)
    summary = {
        "start_ns": int(ledger.start_ns),
        "end_ns": int(ledger.end_ns),
        "duration_hours": (ledger.end_ns - ledger.start_ns) / NS_PER_HOUR,
        "initial_equity_usdt": initial,
        "final_equity_usdt": final,
        "net_pnl_usdt": final - initial,  # after fees and funding, open position marked at mid
        "return_pct": (final / initial - 1.0) * 100.0,
        **risk_adjusted(ledger),
        "max_drawdown_pct": float(below_frac.max() * 100.0) if len(equity) else 0.0,
        "max_drawdown_usdt": float(below_usdt.max()) if len(equity) else 0.0,
        **{k: stats[k] for k in ("trades", "wins", "win_rate", "profit_factor", "avg_trade_usdt",
                                 "avg_win_usdt", "avg_loss_usdt", "best_usdt", "worst_usdt", "avg_hold_s")},
        "round_trips_net_usdt": stats["net_usdt"],
        "fills": len(fills),
        "fills_by_liquidity": ({str(k): int(v) for k, v in fills["liquidity"].value_counts().sort_index().items()}
                               if len(fills) else {}),  # fmt: skip
        "traded_notional_usdt": traded_usdt,
        "turnover": traded_usdt / initial,
        "fees_paid_usdt": float(fills["fee_usdt"].sum()) if len(fills) else 0.0,  # rebates count negative
        "funding_net_usdt": float(ledger.funding["amount_usdt"].sum()) if len(ledger.funding) else 0.0,
        **exposure(ledger),
        "liquidations": int(ledger.liquidations),
        "open_at_end": _open_at_end(fills),
        "by_strategy": {str(k): trade_stats(g) for k, g in trips.groupby("strategy", sort=True)},
        "by_regime": _by_regime(trips, regime_time_pct(ledger)),
        "trade_list_hash": trade_list_hash(fills),
    }
    return {k: _finite(v) if isinstance(v, float) else v for k, v in summary.items()}


def _by_regime(trips: pd.DataFrame, time_pct: dict[str, float]) -> dict[str, dict]:
    """Trade statistics by the regime at open, with the share of time spent in each regime."""
    groups = {str(k): g for k, g in trips.groupby("regime", sort=True)}
    return {regime: {**trade_stats(groups.get(regime, trips.iloc[:0])), "time_pct": time_pct.get(regime, 0.0)}
            for regime in sorted(set(groups) | set(time_pct))}  # fmt: skip


def _open_at_end(fills: pd.DataFrame) -> dict[str, float]:
    """Net position per symbol after the last fill, where not flat."""
    if len(fills) == 0:
        return {}
    net = (fills["side"] * fills["qty"]).groupby(fills["symbol"]).sum()
    scale = fills["qty"].abs().groupby(fills["symbol"]).max()
    return {str(s): float(q) for s, q in net.items() if abs(q) > scale[s] * FLAT_TOLERANCE}


def trade_list_hash(fills: pd.DataFrame) -> str:
    """sha256 over the fills in a canonical form: one line per fill (ts_ns, symbol, client_id, side,
    price and qty to 10 significant digits, fee to 8 decimals), lines sorted, so the hash names the
    set of fills and not the frame's row order; identical runs give identical hashes."""
    digest = hashlib.sha256(f"{HASH_FORMAT}\n".encode())
    if len(fills) == 0:
        return digest.hexdigest()
    g, d = HASH_SIGNIFICANT_DIGITS, HASH_FEE_DECIMALS
    lines = sorted(
        f"{int(t)},{s},{c},{int(side):+d},{p:.{g}g},{q:.{g}g},{round(f, d) + 0.0:.{d}f}\n"
        for t, s, c, side, p, q, f in zip(fills["ts_ns"], fills["symbol"], fills["client_id"], fills["side"],
                                          fills["price"], fills["qty"], fills["fee_usdt"], strict=True)
    )  # fmt: skip
    digest.update("".join(lines).encode())
    return digest.hexdigest()


def compare(summaries: dict[str, dict]) -> pd.DataFrame:
    """The ``HEADLINE`` metrics of several runs side by side: one row per metric, one column per run
    (in the order given); a metric a run lacks, or that is None, is NaN."""
    return pd.DataFrame(
        {name: [np.nan if s.get(k) is None else s[k] for k in HEADLINE] for name, s in summaries.items()},
        index=pd.Index(HEADLINE, name="metric"),
        dtype=np.float64,
    )


def _equity_arrays(ledger: Ledger) -> tuple[np.ndarray, np.ndarray]:
    if len(ledger.equity) == 0:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    equity = ledger.equity.sort_values("ts_ns", kind="stable")
    return equity["ts_ns"].to_numpy(np.int64), equity["equity_usdt"].to_numpy(np.float64)


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
