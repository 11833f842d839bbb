"""The simulated venue's cost per market event: idle (no working order, no position, nothing in
flight: the backtest's hot path on most events) and busy (a position, two resting quotes and a stop
to match against every event).

Not a test: run it (`.venv/bin/python bench/bench_venue.py`) and it records what it measured in
bench/results/venue.json, with the machine and the git revision. Each figure is the best of five
timeit repeats of one call on the same event (the call overhead of timeit's loop included; the
events are built beforehand, as the replay loop builds them once per event anyway). No order
fills during the timed calls: prices stay between our quotes.
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from provenance import provenance  # noqa: E402

from serving.events import LIMIT, MARKET, STOP, DecisionRecord, MarketLimits, Order, Quote, Trade  # noqa: E402
from serving.venues.config import VenueConfig  # noqa: E402
from serving.venues.simulated import SimulatedVenue  # noqa: E402

SYMBOL = "BTC/USDT:USDT"
T0 = 1_704_067_200_000_000_000 + 1  # just after a funding time: none falls due during the run
LIMITS = MarketLimits(SYMBOL, 125.0, 0.1, 0.001, 5.0)


def per_call_ns(call, event, number: int) -> float:
    return min(timeit.repeat(lambda: call(event), number=number, repeat=5)) / number * 1e9


def measure(venue: SimulatedVenue, number: int) -> dict:
    quote = Quote(SYMBOL, T0 + 400_000_000, 60_000.0, 2.0, 60_000.1, 2.0)
    trade = Trade(SYMBOL, T0 + 400_000_000, 60_000.1, 0.01, 1)
    empty = per_call_ns(lambda event: None, quote, number)
    return {"on_quote_ns": round(per_call_ns(venue.on_quote, quote, number)),
            "on_trade_ns": round(per_call_ns(venue.on_trade, trade, number)),
            "empty_lambda_ns": round(empty)}  # fmt: skip


def busy(venue: SimulatedVenue) -> None:
    orders = (
        Order("b1", SYMBOL, 1, MARKET, 0.0, 0.05, False, False, "bench"),
        Order("b2", SYMBOL, 1, LIMIT, 59_990.0, 0.01, True, False, "bench"),
        Order("b3", SYMBOL, -1, LIMIT, 60_010.0, 0.01, True, False, "bench"),
        Order("b4", SYMBOL, -1, STOP, 59_800.0, 0.05, False, True, "bench"),
    )
    record = DecisionRecord(T0 + 1_000_000, SYMBOL, "tick", (), (), 0.5, float("nan"), True, "normal", "", 5.0,
                            "active", "", (), orders, (), ())  # fmt: skip
    venue.submit(record, T0 + 1_000_000)
    venue.advance(T0 + 300_000_000)  # past the longest order latency (250 ms)
    assert len(venue.working()) == 3 and venue.position(SYMBOL).qty == 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=500_000, help="calls per timeit repeat")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "venue.json")
    args = parser.parse_args()
    results = {**provenance(), "config": "VenueConfig() defaults (lognormal order latency, scheduled funding)"}
    venue = SimulatedVenue(VenueConfig(), [LIMITS], 10_000.0)
    venue.on_quote(Quote(SYMBOL, T0, 60_000.0, 2.0, 60_000.1, 2.0))  # the first event sets the funding clock
    results["idle"] = measure(venue, args.number)
    busy(venue)
    results["busy"] = measure(venue, args.number // 5)
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
