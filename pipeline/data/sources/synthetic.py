"""A seeded market simulator: the product's offline tick source.

``simulate`` produces one symbol's trades and top-of-book quotes as plain numpy arrays, from an
event-time model compiled with numba (~10 million events in a few seconds on one core):

- a latent **regime** (trending / ranging / volatile / quiet), a continuous-time Markov chain whose
  episodes last minutes; each regime has its own drift, volatility, event rate, trade share,
  spread and depth. Trending episodes drift one way; ranging episodes mean-revert to where they began.
- **volatility clustering**: a GARCH(1,1) variance multiplier driven by the price innovations, whose
  shocks are heavy-tailed (a normal scale mixture), plus self-excitation (Hawkes-like) of the event
  rate by trades, so activity and volatility come in bursts;
- a short-lived latent **order flow** state (an AR(1) with a ~40-event memory) that biases which
  side takers hit *and* drifts the price over the next tens of events, so signed trade volume
  carries a real but modest short-horizon signal (corr ~0.1 with the next ~50-event mid return),
  mirrored weakly in the bid/ask size imbalance. Trades also move the price at once (impact).

Quotes are published on the tick grid from the latent price, 1 tick wide most of the time, never
crossed; a third of quote updates only refresh sizes. A taker order prints one or more fills (one
per maker, microseconds apart, as Binance reports them) at the last published bid (taker sell) or
ask (taker buy). Sizes are lognormal in notional, converted to base currency and rounded to a lot;
occasional block trades are much larger.

``SyntheticSource`` wraps it as a ``TickSource``. Each symbol's random stream is seeded from
(config seed, symbol) through blake2b, so the tables are bit-identical across runs and processes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
from numba import njit

from pipeline.config import SyntheticSourceConfig
from pipeline.data.schemas import QUOTES, TRADES, Kind
from pipeline.data.sources.base import TickBatch

REGIMES = ("trending", "ranging", "volatile", "quiet")
_TRENDING, _RANGING = 0, 1

# Per regime, in REGIMES order. Rates and volatilities are per second of event (exchange) time.
MEAN_DURATION_S = np.array([480.0, 720.0, 240.0, 600.0])  # episodes of minutes, as regimes are seen
REGIME_SWITCH = np.array(  # where an episode goes when it ends (rows sum to 1, no self-loops)
    [
        [0.00, 0.40, 0.35, 0.25],  # a trend ends in a range, a blow-off, or calm
        [0.40, 0.00, 0.20, 0.40],
        [0.35, 0.45, 0.00, 0.20],  # volatility mostly settles into a range
        [0.30, 0.40, 0.30, 0.00],  # calm breaks out into a trend or a shock
    ]
)
EVENT_RATE = np.array([16.0, 12.0, 34.0, 5.0])  # events/s before the vol and self-excitation boosts
VOL_PER_SQRT_S = np.array([9.0e-5, 7.0e-5, 2.0e-4, 4.0e-5])  # 50/40/110/22 % a year, before GARCH
TREND_DRIFT_PER_S = 1.0e-5  # ~0.5 % over a mean trending episode: ~2 sigma, visible but not free money
RANGE_REVERSION_PER_S = math.log(2.0) / 60.0  # ranging prices revert to the episode's start, 60 s half-life
TAKER_SHARE = np.array([0.13, 0.12, 0.16, 0.10])  # P(event is a taker order): quotes:trades ~2-3.5
WIDE_SPREAD_PROB = np.array([0.04, 0.02, 0.15, 0.02])  # Binance BTC perp: 1 tick ~94 % of quotes
DEPTH_SCALE = np.array([1.0, 1.2, 0.5, 1.5])  # top-of-book size relative to DEPTH_MEDIAN_NOTIONAL

GARCH_ALPHA, GARCH_BETA = 0.02, 0.978  # persistence 0.998: vol shocks decay over ~350 events
TAIL_PROB, TAIL_SCALE = 0.02, 3.5  # 2 % of shocks 3.5x larger: kurtosis ~8 before GARCH
HAWKES_JUMP, HAWKES_MEMORY_EVENTS = 0.06, 20.0  # each trade adds 6 % rate, decaying over ~20 events
HAWKES_MAX = 5.0  # caps the rate boost (x6) so a burst can never explode

FLOW_MEMORY_EVENTS = 40.0  # the order-flow state forgets over ~40 events (a few seconds)
FLOW_SIDE = 0.6  # P(taker buys) = (1 + tanh(FLOW_SIDE * flow)) / 2: 77/23 at one sigma of flow
FLOW_DRIFT = 0.035  # price drift per event, in per-event sigmas per unit flow: sets corr ~0.1
BOOK_TILT = 0.15  # log(bid_qty / ask_qty) leans with the flow: a weak second signal
IMPACT = 0.25  # a median trade moves the latent price by a quarter of a per-event sigma

FILL_CONTINUE, MAX_FILLS = 0.6, 12  # a taker order prints 2.5 fills on average (geometric), one per maker
FILL_GAP_NS = 20_000  # its fills follow each other within microseconds (Binance stamps them the same ms)
TRADE_MEDIAN_NOTIONAL, TRADE_NOTIONAL_SIGMA = 1_000.0, 1.9  # Binance BTC perp: median ~$1k, p90 ~$16k
BLOCK_PROB, BLOCK_TAIL = 0.003, 1.5  # rare block trades: a Pareto multiple of a normal trade...
BLOCK_MIN_MULT, BLOCK_MAX_MULT = 10.0, 100.0  # ...between 10x and 100x
MAX_TRADE_NOTIONAL = 5_000_000.0  # the largest BTC perp prints are a few $M
DEPTH_MEDIAN_NOTIONAL, DEPTH_SIGMA = 100_000.0, 1.2  # real BTC perp top level: median ~$165k
SIZE_ONLY_QUOTE_PROB = 0.35  # many real book-ticker updates change only the sizes
UPDATE_ID_GAP = 8.0  # mean unseen depth updates between two top-of-book updates
LATENCY_MIN_NS, LATENCY_MEAN_EXTRA_NS, LATENCY_MAX_EXTRA_NS = 1_000_000, 700_000, 4_000_000


def simulate(
    seed: int,
    n_events: int,
    start_ns: int,
    start_price: float,
    tick_size: float,
    qty_step: float | None = None,
    first_trade_id: int = 1,
    first_update_id: int = 1,
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """One symbol's ticks: ``(trades, quotes)``, each a tuple of arrays in its schema's column order.

    trades: ts_ns, recv_ns, trade_id, price, qty, side (int8); quotes: ts_ns, recv_ns, update_id,
    bid_px, bid_qty, ask_px, ask_qty. ``n_events`` counts trades and quotes together; the first
    event is a quote. ``qty_step`` (the lot) defaults to the power of ten worth $10-$100.
    """
    if n_events < 0:
        raise ValueError("n_events must be >= 0")
    if not (start_price > 0 and tick_size > 0):
        raise ValueError("start_price and tick_size must be positive")
    if qty_step is None:
        qty_step = 10.0 ** math.floor(math.log10(100.0 / start_price))
    rng = np.random.Generator(np.random.PCG64(seed))
    return _simulate(
        rng, n_events, start_ns, start_price, tick_size, _exact_inverse(tick_size),
        qty_step, _exact_inverse(qty_step), first_trade_id, first_update_id,
    )  # fmt: skip


def _exact_inverse(step: float) -> float:
    """1/step when it is a whole number (0.1 -> 10), else 0: k / 10 is the double nearest to the
    decimal (60000.1), where k * 0.1 may not be (60000.100000000006)."""
    inverse = round(1.0 / step)
    return float(inverse) if inverse >= 1 and abs(inverse * step - 1.0) < 1e-12 else 0.0


@njit(cache=True, inline="always")
def _on_grid(k, step, inverse):
    return k / inverse if inverse > 0.0 else k * step


@njit(cache=True)
def _grow(a, size):
    out = np.empty(size, a.dtype)
    out[: a.size] = a
    return out


@njit(cache=True)
def _fit(a, n):
    """The first n items, copied when that frees much memory."""
    return a[:n].copy() if n < 0.8 * a.size else a[:n]


@njit(cache=True)
def _simulate(rng, n, start_ns, start_price, tick, inv_tick, qty_step, inv_qty_step, trade_id, update_id):
    t_cap = min(n, int(0.4 * n) + 1024)
    q_cap = min(n, int(0.85 * n) + 1024)
    t_ts = np.empty(t_cap, np.int64)
    t_recv = np.empty(t_cap, np.int64)
    t_id = np.empty(t_cap, np.int64)
    t_px = np.empty(t_cap, np.float64)
    t_qty = np.empty(t_cap, np.float64)
    t_side = np.empty(t_cap, np.int8)
    q_ts = np.empty(q_cap, np.int64)
    q_recv = np.empty(q_cap, np.int64)
    q_id = np.empty(q_cap, np.int64)
    q_bid = np.empty(q_cap, np.float64)
    q_bid_qty = np.empty(q_cap, np.float64)
    q_ask = np.empty(q_cap, np.float64)
    q_ask_qty = np.empty(q_cap, np.float64)

    tail_norm = 1.0 / math.sqrt(1.0 - TAIL_PROB + TAIL_PROB * TAIL_SCALE * TAIL_SCALE)
    garch_omega = 1.0 - GARCH_ALPHA - GARCH_BETA
    flow_phi = math.exp(-1.0 / FLOW_MEMORY_EVENTS)
    flow_kick = math.sqrt(1.0 - flow_phi * flow_phi)

    regime = int(rng.random() * 4.0)
    trend_sign = 1.0 if rng.random() < 0.5 else -1.0
    log_px = math.log(start_price)
    anchor = log_px
    variance = 1.0  # GARCH multiplier of the regime's variance, mean 1
    excitation = 0.0
    flow = rng.standard_normal()
    t_ns = start_ns
    bid_k = np.int64(0)
    ask_k = np.int64(0)
    bid_qty = 0.0
    ask_qty = 0.0
    n_t = 0
    n_q = 0
    fills_left = 0  # prints still to come of the taker order in progress
    buy = True
    sigma = 0.0
    for _ in range(n):
        latency = LATENCY_MIN_NS + min(
            np.int64(rng.standard_exponential() * LATENCY_MEAN_EXTRA_NS), np.int64(LATENCY_MAX_EXTRA_NS)
        )
        if fills_left > 0:  # the order's next maker fill: microseconds later, same side, same touch
            fills_left -= 1
            t_ns += 1 + np.int64(rng.standard_exponential() * FILL_GAP_NS)
            is_trade = True
        else:
            rate = EVENT_RATE[regime] * math.sqrt(variance) * (1.0 + excitation)
            dt_ns = max(np.int64(1), np.int64(rng.standard_exponential() / rate * 1e9 + 0.5))
            t_ns += dt_ns
            dt = dt_ns * 1e-9

            if rng.random() < -math.expm1(-dt / MEAN_DURATION_S[regime]):
                u = rng.random()
                nxt = 0
                acc = REGIME_SWITCH[regime, 0]
                while u >= acc and nxt < 3:
                    nxt += 1
                    acc += REGIME_SWITCH[regime, nxt]
                regime = nxt
                if regime == _TRENDING:
                    trend_sign = 1.0 if rng.random() < 0.5 else -1.0
                elif regime == _RANGING:
                    anchor = log_px
            excitation *= math.exp(-dt * EVENT_RATE[regime] / HAWKES_MEMORY_EVENTS)
            flow = flow_phi * flow + flow_kick * rng.standard_normal()

            sigma = VOL_PER_SQRT_S[regime] * math.sqrt(variance * dt)
            shock = rng.standard_normal()
            if rng.random() < TAIL_PROB:
                shock *= TAIL_SCALE
            shock *= tail_norm
            drift = FLOW_DRIFT * flow * sigma
            if regime == _TRENDING:
                drift += trend_sign * TREND_DRIFT_PER_S * dt
            elif regime == _RANGING:
                drift -= RANGE_REVERSION_PER_S * (log_px - anchor) * dt
            log_px += drift + sigma * shock
            variance = garch_omega + (GARCH_ALPHA * shock * shock + GARCH_BETA) * variance

            is_trade = n_q > 0 and rng.random() < TAKER_SHARE[regime]
            if is_trade:
                buy = rng.random() < 0.5 * (1.0 + math.tanh(FLOW_SIDE * flow))
                while fills_left < MAX_FILLS - 1 and rng.random() < FILL_CONTINUE:
                    fills_left += 1
                excitation = min(excitation + HAWKES_JUMP, HAWKES_MAX)

        if is_trade:
            notional = TRADE_MEDIAN_NOTIONAL * math.exp(TRADE_NOTIONAL_SIGMA * rng.standard_normal())
            if rng.random() < BLOCK_PROB:
                notional *= min(BLOCK_MIN_MULT * (1.0 - rng.random()) ** (-1.0 / BLOCK_TAIL), BLOCK_MAX_MULT)
            notional = min(notional, MAX_TRADE_NOTIONAL)
            k = ask_k if buy else bid_k
            price = _on_grid(k, tick, inv_tick)
            lots = max(1.0, math.floor(notional / price / qty_step + 0.5))
            side = 1 if buy else -1
            log_px += side * IMPACT * sigma * min(math.sqrt(notional / TRADE_MEDIAN_NOTIONAL), 10.0)
            if n_t == t_cap:
                t_cap = min(n, t_cap + t_cap // 2 + 1)
                t_ts, t_recv, t_id = _grow(t_ts, t_cap), _grow(t_recv, t_cap), _grow(t_id, t_cap)
                t_px, t_qty, t_side = _grow(t_px, t_cap), _grow(t_qty, t_cap), _grow(t_side, t_cap)
            t_ts[n_t] = t_ns
            t_recv[n_t] = t_ns + latency
            t_id[n_t] = trade_id
            t_px[n_t] = price
            t_qty[n_t] = _on_grid(lots, qty_step, inv_qty_step)
            t_side[n_t] = side
            trade_id += 1
            n_t += 1
            continue

        if n_q == 0 or rng.random() >= SIZE_ONLY_QUOTE_PROB:
            spread = 1
            if rng.random() < WIDE_SPREAD_PROB[regime] * min(3.0, math.sqrt(variance)):
                spread += 1 + min(int(rng.standard_exponential() * 2.5), 20)
            center = math.exp(log_px) / tick
            bid_k = max(np.int64(1), np.int64(math.floor(center - 0.5 * spread + 0.5)))
            ask_k = bid_k + spread
        depth = DEPTH_MEDIAN_NOTIONAL * DEPTH_SCALE[regime]
        tilt = 0.5 * BOOK_TILT * flow
        bid_px = _on_grid(bid_k, tick, inv_tick)
        ask_px = _on_grid(ask_k, tick, inv_tick)
        bid_notional = depth * math.exp(DEPTH_SIGMA * rng.standard_normal() + tilt)
        ask_notional = depth * math.exp(DEPTH_SIGMA * rng.standard_normal() - tilt)
        bid_qty = _on_grid(max(1.0, math.floor(bid_notional / bid_px / qty_step)), qty_step, inv_qty_step)
        ask_qty = _on_grid(max(1.0, math.floor(ask_notional / ask_px / qty_step)), qty_step, inv_qty_step)
        if n_q == q_cap:
            q_cap = min(n, q_cap + q_cap // 2 + 1)
            q_ts, q_recv, q_id = _grow(q_ts, q_cap), _grow(q_recv, q_cap), _grow(q_id, q_cap)
            q_bid, q_bid_qty = _grow(q_bid, q_cap), _grow(q_bid_qty, q_cap)
            q_ask, q_ask_qty = _grow(q_ask, q_cap), _grow(q_ask_qty, q_cap)
        q_ts[n_q] = t_ns
        q_recv[n_q] = t_ns + latency
        q_id[n_q] = update_id
        q_bid[n_q] = bid_px
        q_bid_qty[n_q] = bid_qty
        q_ask[n_q] = ask_px
        q_ask_qty[n_q] = ask_qty
        update_id += 1 + np.int64(rng.standard_exponential() * UPDATE_ID_GAP)
        n_q += 1

    trades = (
        _fit(t_ts, n_t), _fit(t_recv, n_t), _fit(t_id, n_t),
        _fit(t_px, n_t), _fit(t_qty, n_t), _fit(t_side, n_t),
    )  # fmt: skip
    quotes = (
        _fit(q_ts, n_q), _fit(q_recv, n_q), _fit(q_id, n_q), _fit(q_bid, n_q),
        _fit(q_bid_qty, n_q), _fit(q_ask, n_q), _fit(q_ask_qty, n_q),
    )  # fmt: skip
    return trades, quotes


class SyntheticSource:
    """Simulated trades and quotes for each symbol: ``config.ticks`` events per symbol."""

    def __init__(
        self, config: SyntheticSourceConfig, symbols: tuple[str, ...], exchange: str = "synthetic"
    ) -> None:
        self._config = config
        self._symbols = tuple(symbols)
        self._exchange = exchange

    @property
    def description(self) -> str:
        return f"synthetic:seed={self._config.seed}"

    def batches(self) -> Iterator[TickBatch]:
        config = self._config
        for symbol in self._symbols:
            seed = symbol_seed(config.seed, symbol)
            # Ids start at a seed-dependent block, so that runs with other seeds stored side by side
            # are not mistaken for re-ingests of the same trades (the store dedupes on trade_id).
            id_base = 1 + (seed % 1_000_000) * 1_000_000_000
            trades, quotes = simulate(
                seed, config.ticks, epoch_ns(config.start), config.start_price, config.tick_size,
                first_trade_id=id_base, first_update_id=id_base,
            )  # fmt: skip
            yield TickBatch(self._exchange, symbol, Kind.TRADES, _table(TRADES, trades))
            yield TickBatch(self._exchange, symbol, Kind.QUOTES, _table(QUOTES, quotes))


def symbol_seed(seed: int, symbol: str) -> int:
    """A 64-bit seed per (seed, symbol), the same in every process (unlike the salted ``hash``)."""
    digest = hashlib.blake2b(f"{seed}|{symbol}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def epoch_ns(when: datetime) -> int:
    """Exact integer ns since the Unix epoch; a naive datetime is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    delta = when - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _table(schema: pa.Schema, columns: tuple[np.ndarray, ...]) -> pa.Table:
    return pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, schema)], schema=schema)
