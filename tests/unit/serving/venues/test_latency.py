"""An order sent at t works from t + latency, against the book as it is then."""

import numpy as np
import pytest

from serving.events import Fill, OrderDone
from serving.venues.config import ConstantLatency, LatencyConfig, LognormalLatency, UniformLatency
from serving.venues.latency import LatencySampler, samplers


def latency(order_ms: float, market_data_ms: float = 0.0) -> LatencyConfig:
    return LatencyConfig(order=ConstantLatency(ms=order_ms), market_data=ConstantLatency(ms=market_data_ms))


def test_an_order_matches_the_book_at_its_arrival(sim):
    s = sim(sim.config(latency=latency(10.0)))
    s.quote(100.00, 100.01, ask_qty=5.0)
    assert s.send(s.order(1, qty=1.0)) == []  # in flight
    assert s.venue.next_ts == s.now + 10 * sim.MS
    assert s.quote(100.04, 100.05, ask_qty=5.0, dt_ms=5) == []
    assert s.advance(4) == []  # 9 ms: not there yet
    [fill] = s.advance(1)
    assert (fill.ts_ns, fill.price) == (s.now, 100.05)  # the ask at arrival, not when sent


def test_the_market_data_delay_adds_to_the_order_latency(sim):
    s = sim(sim.config(latency=latency(10.0, market_data_ms=5.0)))
    s.quote(100.00, 100.01, ask_qty=5.0)
    sent = s.now
    s.send(s.order(1, qty=1.0))
    assert s.venue.next_ts == sent + 15 * sim.MS


def test_market_data_up_to_the_arrival_is_applied_first(sim):
    s = sim(sim.config(latency=latency(10.0)))
    s.quote(100.00, 100.05)
    s.send(s.limit(1, 100.02))  # post-only: fine when sent
    # It arrives at this quote's ns: it works first (bid 100.02, ahead of everyone), then the ask
    # coming down to it fills it, as maker...
    [fill] = s.quote(100.00, 100.02, dt_ms=10)
    assert (fill.client_id, fill.price, fill.fee_usdt) == ("o1", 100.02, pytest.approx(100.02 * 0.0002))
    s2 = sim(sim.config(latency=latency(10.0)))
    s2.quote(100.00, 100.05)
    s2.send(s2.limit(1, 100.02))
    s2.quote(100.00, 100.02, dt_ms=9)  # ...but a quote a ms earlier makes it cross: rejected
    assert [(e.client_id, e.reason) for e in s2.advance(1)] == [("o1", "rejected")]


def test_a_cancel_in_flight_loses_the_race_to_a_fill(sim):
    s = sim(sim.config(latency=latency(10.0)))
    s.quote(100.00, 100.02, bid_qty=0.0)
    s.send(s.limit(1, 100.01))
    s.advance(10)
    s.send(cancels=("o1",))  # arrives in 10 ms
    [fill] = s.trade(100.00, 1.0, -1, dt_ms=5)  # through our bid meanwhile
    assert type(fill) is Fill and fill.client_id == "o1"
    assert s.advance(5) == []  # the cancel finds nothing to cancel
    assert s.position == 1.0


def test_a_cancel_that_arrives_first_wins(sim):
    s = sim(sim.config(latency=latency(10.0)))
    s.quote(100.00, 100.02, bid_qty=0.0)
    s.send(s.limit(1, 100.01))
    s.advance(10)
    s.send(cancels=("o1",))
    assert s.advance(10) == [OrderDone(sim.SYMBOL, s.now, "o1", "cancelled")]
    assert s.trade(100.00, 1.0, -1) == [] and s.position == 0.0


def test_messages_arrive_in_the_order_sent(sim):
    config = LatencyConfig(order=LognormalLatency(median_ms=10.0, sigma=1.5, max_ms=500.0),
                           market_data=UniformLatency(low_ms=0.0, high_ms=5.0))  # fmt: skip
    s = sim(sim.config(latency=config))
    s.quote(100.00, 100.05)
    previous = ()
    for price in (99.90, 99.91, 99.92, 99.93, 99.94, 99.95, 99.96, 99.97):
        order = s.limit(1, price)
        s.send(order, cancels=previous)  # replace the previous quote
        previous = (order.client_id,)
        s.now += sim.MS
    arrivals = [m[0] for m in s.venue._inbox]
    assert arrivals == sorted(arrivals)
    s.advance(1_000)
    assert [o.price for o in s.venue.working()] == [99.97]  # each cancel found its order there



def arrivals(sim, seed: int) -> list:
    config = LatencyConfig(order=LognormalLatency(median_ms=10.0, sigma=0.8), seed=seed)
    s = sim(sim.config(latency=config))
    out = []
    for i in range(50):
        events = s.quote(100.00 + i * 0.01, 100.01 + i * 0.01, ask_qty=5.0, dt_ms=3)
        events += s.send(s.order(1, qty=0.01))
        events += s.advance(2)
        out += [(e.ts_ns, e.price) for e in events]
    return out + [(e.ts_ns, e.price) for e in s.advance(1_000)]


def test_a_seeded_latency_gives_the_same_run(sim):
    first = arrivals(sim, seed=7)
    assert len(first) == 50
    assert arrivals(sim, seed=7) == first
    assert arrivals(sim, seed=8) != first


def test_draws_do_not_depend_on_the_block_size():
    a, _ = samplers(LognormalLatency(median_ms=10.0), ConstantLatency(), seed=3)
    rng = np.random.default_rng(np.random.SeedSequence(3).spawn(2)[0])
    expected = np.rint(np.minimum(10.0 * np.exp(0.5 * rng.standard_normal(3000)), 1_000.0) * 1e6).astype(int)
    assert [a() for _ in range(3000)] == expected.tolist()
    assert LatencySampler(UniformLatency(low_ms=1.0, high_ms=1.0), rng)() == 1_000_000
    with pytest.raises(ValueError):
        UniformLatency(low_ms=2.0, high_ms=1.0)
