"""The engine (EngineConfig defaults) trading against the venue over a synthetic random walk: no
errors, and at the end the engine's books agree with the venue's."""

import math

import numpy as np
import pytest

from serving.config import EngineConfig
from serving.engine import Engine
from serving.events import Fill, FundingPayment, OrderDone, Quote, Trade
from serving.venues.config import FundingConfig, LatencyConfig, LognormalLatency

HOUR = 3_600 * 1_000_000_000


def replay(harness, sim, steps: int, seed: int, funding: str = "data"):
    """Quotes and trades a tick apart around 100, every 20 to 120 ms from 07:57 UTC (a scheduled
    funding falls due at 08:00); a lognormal order latency."""
    rng = np.random.default_rng(seed)
    engine = Engine(EngineConfig(), harness.NAMES, [sim.LIMITS], 10_000.0)
    latency = LatencyConfig(order=LognormalLatency(median_ms=20.0, sigma=0.7), seed=seed)
    venue = sim(sim.config(latency=latency, funding=FundingConfig(source=funding, rate=0.001))).venue
    counts = {"fills": 0, "done": 0, "orders": 0}

    def deliver(events):
        for event in events:
            if type(event) is Fill:
                counts["fills"] += 1
                record = engine.on_fill(event)
            elif type(event) is OrderDone:
                counts["done"] += 1
                record = engine.on_order_done(event)
            elif type(event) is FundingPayment:
                record = engine.on_funding(event)
            else:
                continue
            send(record, event.ts_ns)

    def send(record, ts_ns):
        if record is not None:
            counts["orders"] += len(record.orders)
            deliver(venue.submit(record, ts_ns))

    quiet = [harness.features(rsi=r, bb_z=z) for r, z in rng.uniform(-0.4, 0.4, (16, 2))]
    mid_ticks, t = 10_000, sim.T0 + 8 * HOUR - 180_000 * sim.MS
    for i in range(steps):
        t += int(rng.integers(20, 120)) * sim.MS
        while venue.next_ts <= t:
            deliver(venue.advance(venue.next_ts))
        mid_ticks += int(rng.choice((-1, 0, 0, 1)))
        bid, ask = mid_ticks / 100, (mid_ticks + 1) / 100
        if rng.random() < 0.5:
            side = 1 if rng.random() < 0.5 else -1
            trade = Trade(sim.SYMBOL, t, ask if side > 0 else bid, float(rng.exponential(3.0)), side)
            deliver(venue.on_trade(trade))
            send(engine.on_trade(trade), t)
        else:
            quote = Quote(sim.SYMBOL, t, bid, float(rng.uniform(0.5, 5)), ask, float(rng.uniform(0.5, 5)))
            deliver(venue.on_quote(quote))
            send(engine.on_tick(quote, quiet[i % 16], float(rng.uniform(0.4, 0.6))), t)
        if i % 10 == 0:
            send(engine.on_clock(t), t)
    t += 1_000 * sim.MS  # everything in flight arrives
    while venue.next_ts <= t:
        deliver(venue.advance(venue.next_ts))
    return engine, venue, counts


@pytest.mark.parametrize("seed, funding", [(1, "data"), (3, "data"), (2, "schedule")])  # 2: short at 08:00
def test_the_engine_and_the_venue_agree_after_a_few_thousand_events(harness, sim, seed, funding):
    engine, venue, counts = replay(harness, sim, 4_000, seed, funding)
    assert counts["orders"] > 100 and counts["fills"] > 20, counts  # it did trade
    position = engine.symbols[sim.SYMBOL].position
    truth = venue.position(sim.SYMBOL)
    assert position.qty == truth.qty
    if truth.qty:
        assert position.entry == pytest.approx(truth.entry_px)
    # the engine books fills, fees and funding as the venue does: the same cash. (Margin can differ a
    # little: the engine posts an order's leverage at decision time, the venue the one at its arrival.)
    paid = venue.account().funding_usdt
    assert (paid != 0.0) == (funding == "schedule")
    assert engine.portfolio.cash_usdt == pytest.approx(venue.wallet_usdt, abs=1e-6)
    assert math.isfinite(venue.equity()) and venue.account().fills == counts["fills"]
