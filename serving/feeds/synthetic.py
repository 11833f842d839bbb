"""``SyntheticFeed``: the product's simulator (``pipeline.data.sources.synthetic.simulate``) as a
live feed, so a paper daemon runs with no exchange and no stored data.

Event time starts at the wall clock when the feed starts (or at ``start_ns``), so the daemon sees
fresh data, and runs at ``speed`` times real time (None or 0: as fast as the daemon drains).
Each symbol is simulated in chunks of ``chunk_events``; a chunk continues the previous one's time,
mid price and trade/update ids, its random stream seeded from (seed, symbol, chunk number, run), so
a seed gives the same ticks every time for a given ``run``. The first chunk of run 1 is the
``SyntheticSource`` stream of the same seed and symbol, shifted in time and ids. The daemon passes
its journal's run number, and starts a restarted market at the paper venue's last mid and after its
clock (serving/daemon/build.py): a restart continues the price where the account left it, on a new
path (the same seed again would replay the same moves, which a restarted strategy would meet
again). The simulator's latent state (regime, volatility, order flow) starts afresh each chunk:
keep chunks long (the default is ~1 hour of event time). Ticks of a chunk are ordered by
``merge_events``, as in training.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import pyarrow as pa

from pipeline.data.schemas import QUOTES, TRADES
from pipeline.data.sources.synthetic import simulate, symbol_seed
from pipeline.features.events import merge_events
from serving.feeds.base import CONNECTED, ENDED, Event, Feed
from serving.feeds.replay import merge_lanes, stream_events

_SEED_MASK = 2**64 - 1


def chunk_seed(seed: int, symbol: str, chunk: int, run: int = 1) -> int:
    base = symbol_seed(seed, symbol) if run <= 1 else symbol_seed(seed, f"{symbol}|run {run}")
    return base if chunk == 0 else (base + chunk) & _SEED_MASK


def simulated_events(
    symbol: str,
    seed: int,
    start_ns: int,
    n_events: int | None,
    start_price: float,
    tick_size: float,
    chunk_events: int,
    run: int = 1,
) -> Iterator[tuple[int, Event]]:
    """(event time, event) of one simulated symbol, ``n_events`` of them (None: without end)."""
    price, trade_id, update_id, t0 = start_price, 1, 1, start_ns
    chunk, left = 0, n_events
    while left is None or left > 0:
        n = chunk_events if left is None else min(chunk_events, left)
        trades, quotes = simulate(chunk_seed(seed, symbol, chunk, run), n, t0, price, tick_size,
                                  first_trade_id=trade_id, first_update_id=update_id)  # fmt: skip
        yield from stream_events(symbol, merge_events(_table(TRADES, trades), _table(QUOTES, quotes)))
        ts, ids, bid, ask = quotes[0], quotes[2], quotes[3], quotes[5]
        if len(ts):
            price = (float(bid[-1]) + float(ask[-1])) / 2
            update_id = int(ids[-1]) + 1
        if len(trades[0]):
            trade_id = int(trades[2][-1]) + 1
        t0 = max(int(ts[-1]) if len(ts) else t0, int(trades[0][-1]) if len(trades[0]) else t0)
        chunk += 1
        if left is not None:
            left -= n


def _table(schema: pa.Schema, columns: tuple) -> pa.Table:
    return pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)], schema=schema)


class SyntheticFeed(Feed):
    """Simulated quotes and trades of ``symbols`` (see module doc). ``n_events`` per symbol (None:
    until stopped). ``run``: the daemon's run number (a restart: another path). Statuses:
    ``connected`` at the start, ``ended`` after a fixed-length run."""

    name = "synthetic"

    def __init__(
        self,
        symbols: str | Sequence[str],
        seed: int = 7,
        n_events: int | None = None,
        speed: float | None = 1.0,
        start_price: float = 60_000.0,
        tick_size: float = 0.1,
        chunk_events: int = 50_000,
        start_ns: int | None = None,
        max_events: int = 10_000,
        clock_ns: Callable[[], int] = time.time_ns,
        run: int = 1,
    ) -> None:
        super().__init__(max_events, clock_ns)
        if speed is not None and speed < 0:
            raise ValueError("speed must be >= 0 (0 or None: as fast as possible)")
        if n_events is not None and n_events < 0:
            raise ValueError("n_events must be >= 0 (None: without end)")
        if chunk_events < 1:
            raise ValueError("chunk_events must be >= 1")
        if not start_price > 0.0:
            raise ValueError(f"start_price must be > 0, got {start_price}")
        self.symbols = (symbols,) if isinstance(symbols, str) else tuple(symbols)
        self.seed = seed
        self.n_events = n_events
        self.speed = speed
        self.start_price = start_price
        self.tick_size = tick_size
        self.chunk_events = chunk_events
        self.start_ns = start_ns
        self.run = run

    def _prepare(self) -> None:
        if self.start_ns is None:
            self.start_ns = self.clock_ns()

    def _produce(self) -> None:
        start = self.start_ns if self.start_ns is not None else self.clock_ns()
        run = f" run {self.run}" if self.run > 1 else ""
        self.status(None, CONNECTED, f"simulator seed {self.seed}{run}: {', '.join(self.symbols)}", ts_ns=start)
        lanes = [
            simulated_events(s, self.seed, start, self.n_events, self.start_price, self.tick_size, self.chunk_events,
                             self.run)
            for s in self.symbols
        ]  # fmt: skip
        last = [start]

        def stamped() -> Iterator[tuple[int, Event]]:
            for ts, event in merge_lanes(lanes):
                last[0] = ts
                yield ts, event

        emitted = self._play(stamped(), self.speed, start)
        if not self._stopping.is_set():
            self.status(None, ENDED, f"{emitted} simulated events", ts_ns=last[0])
