"""The simulated venue's state as JSON and back: what the paper broker keeps on disk so that "the
exchange" outlives a kill -9 of the daemon.

Everything that changes is stored: the account (wallet, positions, fee and funding totals), each
book's last quote and depth, our working orders with their queue positions, the messages in flight
(orders and cancels sent, not yet arrived), the funding schedule and the clock. What follows from the
configuration and the market limits (fee rates, margin tiers, the markets) is rebuilt by the
constructor, so a snapshot is restored into a venue built with the same configuration.

A latency sampler keeps its generator's state; the block of draws already made is dropped, so after
a restore the delays are new draws from the saved state (still seeded, not the sequence an
uninterrupted run would have drawn: paper trading is not replayable anyway).

The module reads the venue's private attributes, on purpose: the venue stays free of persistence,
and ``tests/unit/serving/brokers/test_venue_snapshot.py`` fails when one is added that is not
handled here.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from serving.events import Cancel, Depth, Order, Quote
from serving.venues.config import ConstantLatency
from serving.venues.matching import Resting
from serving.venues.simulated import SimulatedVenue

# The venue's attributes: rebuilt from the configuration, stored, or rebuilt from the books.
VENUE_FROM_CONFIG = frozenset({
    "config", "_books", "_maker", "_taker", "_spacing_ticks", "_level_fraction", "_max_slip", "_behind_touch",
    "_liq_fee_rate", "_funding_interval_ns", "_funding_rate",
})  # fmt: skip
VENUE_NUMBERS = ("_next_funding", "_last_arrival", "next_ts", "now", "_liquidations", "_fills", "_volume",
                 "_maker_fees", "_taker_fees", "_funding", "_liq_fees", "_margin_lost")  # fmt: skip
VENUE_STORED = frozenset({*VENUE_NUMBERS, "portfolio", "_inbox", "_md_delay", "_order_delay"})
VENUE_DERIVED = frozenset({"_working"})
BOOK_FROM_CONFIG = frozenset({"symbol", "market", "tiers", "position"})  # position: the portfolio's object
BOOK_NUMBERS = ("busy", "leverage", "max_notional", "liq_px", "taken_bid", "taken_ask")
BOOK_STORED = frozenset({*BOOK_NUMBERS, "quote", "depth", "buys", "sells", "stops", "taken_for"})
PORTFOLIO_NUMBERS = ("cash_usdt", "unrealised_usdt", "peak_usdt", "day", "day_start_usdt", "next_day_ns", "win_rate",
                     "_win_count", "_min_trades")  # fmt: skip
PORTFOLIO_STORED = frozenset({*PORTFOLIO_NUMBERS, "positions", "_wins"})
POSITION_NUMBERS = ("qty", "entry", "margin_usdt", "realised_usdt", "fees_usdt", "trip_pnl_usdt", "unrealised_usdt",
                    "mark", "opened_ns")  # fmt: skip
POSITION_FROM_CONFIG = frozenset({"symbol"})
RESTING_STORED = frozenset({"order", "side", "price", "remaining", "queue_ahead"})  # side, price: the order's
SAMPLER_STORED = frozenset({"config", "_rng", "_block", "_next"})

SNAPSHOT_VERSION = 1


def snapshot(venue: SimulatedVenue) -> dict[str, Any]:
    """The venue's state, JSON-ready (``json.dumps`` writes inf and NaN as Infinity and NaN)."""
    portfolio = venue.portfolio
    return {
        "version": SNAPSHOT_VERSION,
        "venue": {name: getattr(venue, name) for name in VENUE_NUMBERS},
        "inbox": [[arrival, symbol, leverage, [list(c) for c in cancels], [list(o) for o in orders]]
                  for arrival, symbol, leverage, cancels, orders in venue._inbox],  # fmt: skip
        "latency": [_sampler_state(venue._md_delay), _sampler_state(venue._order_delay)],
        "portfolio": {
            **{name: getattr(portfolio, name) for name in PORTFOLIO_NUMBERS},
            "wins": list(portfolio._wins),
            "positions": {s: {n: getattr(p, n) for n in POSITION_NUMBERS} for s, p in portfolio.positions.items()},
        },
        "books": {symbol: _book_state(book) for symbol, book in venue._books.items()},
        "working": list(venue._working),  # client ids in arrival order
    }


def restore(venue: SimulatedVenue, state: dict[str, Any]) -> None:
    """Put ``state`` (from ``snapshot``) into ``venue``, freshly built with the same configuration
    and markets."""
    if state.get("version") != SNAPSHOT_VERSION:
        raise ValueError(f"venue snapshot version {state.get('version')!r}, expected {SNAPSHOT_VERSION}")
    if set(state["books"]) != set(venue._books):
        raise ValueError(f"the snapshot's symbols {sorted(state['books'])} are not the venue's {sorted(venue._books)}")
    for name, value in state["venue"].items():
        setattr(venue, name, value)
    venue._inbox = deque(
        (arrival, symbol, leverage, tuple(Cancel(*c) for c in cancels), tuple(Order(*o) for o in orders))
        for arrival, symbol, leverage, cancels, orders in state["inbox"]
    )
    _restore_sampler(venue._md_delay, state["latency"][0])
    _restore_sampler(venue._order_delay, state["latency"][1])
    portfolio, saved = venue.portfolio, state["portfolio"]
    for name in PORTFOLIO_NUMBERS:
        setattr(portfolio, name, saved[name])
    portfolio._wins.clear()
    portfolio._wins.extend(saved["wins"])
    for symbol, numbers in saved["positions"].items():
        position = portfolio.positions[symbol]  # the same object as its book's: kept, filled in
        for name in POSITION_NUMBERS:
            setattr(position, name, numbers[name])
    resting_by_id = {}
    for symbol, book_state in state["books"].items():
        book = venue._books[symbol]
        _restore_book(book, book_state)
        for resting in book.buys + book.sells + book.stops:
            resting_by_id[resting.order.client_id] = (book, resting)
    if set(resting_by_id) != set(state["working"]):
        raise ValueError("venue snapshot: the working orders differ from the books' resting orders")
    venue._working = {cid: resting_by_id[cid] for cid in state["working"]}  # oldest first, across books


def _book_state(book) -> dict[str, Any]:
    return {
        **{name: getattr(book, name) for name in BOOK_NUMBERS},
        "quote": list(book.quote) if book.quote is not None else None,
        "depth": list(book.depth) if book.depth is not None else None,
        "buys": [_resting_state(r) for r in book.buys],
        "sells": [_resting_state(r) for r in book.sells],
        "stops": [_resting_state(r) for r in book.stops],
        # what was taken is counted against one quote: only the current one matters
        "taken_for_quote": book.taken_for is not None and book.taken_for is book.quote,
    }


def _restore_book(book, state: dict[str, Any]) -> None:
    for name in BOOK_NUMBERS:
        setattr(book, name, state[name])
    book.quote = Quote(*state["quote"]) if state["quote"] is not None else None
    depth = state["depth"]
    if depth is not None:
        symbol, ts_ns, bids, asks = depth
        book.depth = Depth(symbol, ts_ns, tuple(tuple(level) for level in bids), tuple(tuple(level) for level in asks))
    else:
        book.depth = None
    book.buys = [_resting(r) for r in state["buys"]]
    book.sells = [_resting(r) for r in state["sells"]]
    book.stops = [_resting(r) for r in state["stops"]]
    book.taken_for = book.quote if state["taken_for_quote"] else None


def _resting_state(resting: Resting) -> list:
    return [list(resting.order), resting.remaining, resting.queue_ahead]


def _resting(state: list) -> Resting:
    order, remaining, queue_ahead = state
    return Resting(Order(*order), remaining, queue_ahead)


def _sampler_state(sampler) -> dict[str, Any]:
    return sampler._rng.bit_generator.state


def _restore_sampler(sampler, state: dict[str, Any]) -> None:
    sampler._rng.bit_generator.state = state
    if not isinstance(sampler.config, ConstantLatency):
        sampler._block, sampler._next = [], 0
