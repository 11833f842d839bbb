"""The event core's defined behaviour for bad input, online and in batch (pipeline.features.core):
bad ticks are ignored, time never runs backwards, gaps decay what is time-decayed, a stream
without quotes never warms the book features, and NaN never reaches a warm value."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import SyntheticSourceConfig
from pipeline.data.schemas import Kind
from pipeline.data.sources.synthetic import SyntheticSource
from pipeline.features.catalog import catalog, compile_program
from pipeline.features.check import quick_names, synthetic_events
from pipeline.features.core import KIND_DEPTH, KIND_QUOTE, KIND_TRADE, T, new_core
from pipeline.features.engine import FeatureEngine, extract, run_program, warm_mask
from pipeline.features.events import EventArrays, events_from_batches
from pipeline.features.step import step

SECOND = 1_000_000_000
NAN, INF = math.nan, math.inf
# Every family at a short window, and transforms: warm within a few hundred events.
NAMES = quick_names() + ("rv_tick_5_d50", "tsi_tick_5_d50", "spreadrel_l1_d50", "ret_tick_5_z200")
BOOK = ("spreadrel_l1", "bookimb_l1", "microdev_l1", "ofi_tick_20", "rv_tick_20", "bbz_tick_20", "ret_tick_20")

BAD_QUOTES = {
    "NaN bid": (NAN, 1.0, 101.0, 1.0),
    "inf ask": (100.0, 1.0, INF, 1.0),
    "zero bid": (0.0, 1.0, 101.0, 1.0),
    "negative ask": (100.0, 1.0, -101.0, 1.0),
    "NaN size": (100.0, NAN, 101.0, 1.0),
    "inf size": (100.0, 1.0, 101.0, INF),
    "negative size": (100.0, -1.0, 101.0, 1.0),
    "crossed": (101.5, 1.0, 101.0, 1.0),
    "locked": (101.0, 1.0, 101.0, 1.0),
}
BAD_TRADES = {
    "NaN price": (NAN, 1.0, 1.0),
    "inf price": (INF, 1.0, 1.0),
    "zero price": (0.0, 1.0, -1.0),
    "negative price": (-100.0, 1.0, 1.0),
    "NaN qty": (100.0, NAN, 1.0),
    "zero qty": (100.0, 0.0, 1.0),
    "negative qty": (100.0, -2.0, 1.0),
}


@pytest.fixture(scope="module")
def warm_stream() -> EventArrays:
    return synthetic_events(SyntheticSourceConfig(ticks=3_000), "BTC/USDT:USDT")


def fed(names, events: EventArrays) -> FeatureEngine:
    engine = FeatureEngine(names)
    for row in zip(*(column.tolist() for column in events.columns())):
        engine.update(_Tick(*row))
    return engine


class _Tick:
    def __init__(self, ts_ns, kind, price, qty, side, bid, bid_qty, ask, ask_qty):
        self.ts_ns, self.kind, self.price, self.qty, self.side = ts_ns, kind, price, qty, side
        self.bid, self.bid_qty, self.ask, self.ask_qty = bid, bid_qty, ask, ask_qty


def snapshot(engine: FeatureEngine):
    return engine.values.copy(), engine._state.copy(), engine._core.copy(), engine._clock.copy()


def assert_unchanged(before, after):
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)  # NaN == NaN here


@pytest.mark.parametrize("quote", BAD_QUOTES.values(), ids=BAD_QUOTES.keys())
def test_a_bad_quote_changes_nothing(warm_stream, quote):
    engine = fed(NAMES, warm_stream)
    before = snapshot(engine)
    engine.on_quote(int(warm_stream.ts_ns[-1]) + SECOND, *quote)
    assert_unchanged(before, snapshot(engine))


@pytest.mark.parametrize("trade", BAD_TRADES.values(), ids=BAD_TRADES.keys())
def test_a_bad_trade_changes_nothing(warm_stream, trade):
    engine = fed(NAMES, warm_stream)
    before = snapshot(engine)
    engine.on_trade(int(warm_stream.ts_ns[-1]) + SECOND, *trade)
    assert_unchanged(before, snapshot(engine))


def test_step_reports_an_ignored_event_and_an_unknown_kind_is_one():
    program = compile_program(("rv_tick_5",))
    state, (core, clock), out = program.new_state(), new_core(), np.full(1, NAN)
    args = (program.iprog, program.fprog, state, core, clock)
    none = np.empty(0)
    assert step(*args, 1, KIND_QUOTE, NAN, NAN, 0.0, 100.0, 1.0, 101.0, 1.0, none, out)
    assert not step(*args, 2, KIND_QUOTE, NAN, NAN, 0.0, 101.0, 1.0, 100.0, 1.0, none, out)  # crossed
    assert not step(*args, 3, 7, 100.0, 1.0, 1.0, 100.0, 1.0, 101.0, 1.0, none, out)  # not a known kind
    assert not step(*args, 4, KIND_DEPTH, NAN, NAN, 0.0, NAN, NAN, NAN, NAN, none, out)  # depth without a book


def test_bad_ticks_in_a_batch_repeat_the_previous_values(warm_stream):
    garbage = _inject(warm_stream, every=7)
    program = compile_program(NAMES)
    values, progress = run_program(program, garbage.events)
    for i in garbage.bad[garbage.bad > 0]:
        np.testing.assert_array_equal(values[i], values[i - 1])
        np.testing.assert_array_equal(progress[i], progress[i - 1])
    clean, _ = run_program(program, warm_stream)
    good = np.setdiff1d(np.arange(len(garbage.events)), garbage.bad)
    np.testing.assert_array_equal(values[good], clean)  # the garbage left no trace


def test_a_gap_decays_time_features_and_leaves_tick_features_alone(warm_stream):
    names = ("traderate_time_1s", "tsi_time_5s", "rv_time_2s", "rv_tick_20", "tsi_tick_20", "rsi_tick_20")
    last = int(warm_stream.ts_ns[-1])
    quote = (float(warm_stream.bid[warm_stream.kind == KIND_QUOTE][-1]), 2.0,
             float(warm_stream.ask[warm_stream.kind == KIND_QUOTE][-1]), 3.0)
    soon, late = fed(names, warm_stream), fed(names, warm_stream)
    rate_before = soon.values[0]
    soon.on_quote(last + 1_000_000, *quote)  # 1 ms later
    late.on_quote(last + 60 * SECOND, *quote)  # after a one-minute gap
    tick = [names.index(n) for n in ("rv_tick_20", "tsi_tick_20", "rsi_tick_20")]
    np.testing.assert_array_equal(soon.values[tick], late.values[tick])
    assert late.values[0] == pytest.approx(rate_before * math.exp(-60.0), rel=1e-9)
    assert late.values[0] < 1e-20 < soon.values[0]
    assert late.values[2] < soon.values[2]  # realised volatility per second decays too


def test_an_out_of_order_tick_has_a_time_step_of_zero(warm_stream):
    names = ("traderate_time_1s", "rv_time_2s", "vwapdev_time_1s", "rv_tick_20", "ofi_time_1s")
    last = int(warm_stream.ts_ns[-1])
    late, now = fed(names, warm_stream), fed(names, warm_stream)
    late.on_trade(last - 5 * SECOND, 60_000.0, 0.5, 1.0)  # 5 s older than the latest tick
    now.on_trade(last, 60_000.0, 0.5, 1.0)  # the same trade stamped with the latest time
    np.testing.assert_array_equal(late.values, now.values)
    assert late._core[T] == now._core[T]  # time did not run backwards


def test_a_symbol_without_quotes_never_warms_the_book_features():
    batches = SyntheticSource(SyntheticSourceConfig(ticks=4_000), ("BTC/USDT:USDT",)).batches()
    events = events_from_batches(b for b in batches if b.kind == Kind.TRADES)
    assert len(events) and (events.kind == KIND_TRADE).all()
    names = BOOK + ("tsi_tick_20", "sv_tick_20", "traderate_time_1s")
    engine = fed(names, events)
    assert np.isnan(engine.values[: len(BOOK)]).all()
    assert np.isfinite(engine.values[len(BOOK):]).all()
    assert not engine.warm
    frame = extract(events, names)
    assert not frame["warm"].any()
    assert frame[list(BOOK)].isna().all().all()
    trade_only = extract(events, names[len(BOOK):])
    assert trade_only["warm"].iloc[-1]


def test_engine_warm_matches_the_batch_warm_mask(warm_stream):
    names = ("rv_tick_20", "tsi_tick_5_d50", "rv_time_1s_z200")
    engine = FeatureEngine(names)
    online = []
    for row in zip(*(column.tolist() for column in warm_stream.columns())):
        engine.update(_Tick(*row))
        online.append(engine.warm)
    batch = extract(warm_stream, names)["warm"].to_numpy()
    np.testing.assert_array_equal(np.array(online), batch)
    assert batch.any() and not batch.all()


def test_catalog_warmups_include_the_transform_after_its_input():
    spec = catalog()["rv_tick_50_z200"]
    assert spec.warmup.after_events == 2400  # 12 spans of a z-score's deviation
    assert spec.warmup.quotes >= catalog()["rv_tick_50"].warmup.quotes


# ---- property: random streams with garbage ------------------------------------------------------

GARBAGE = ("nan_price", "inf_price", "zero_price", "negative_price", "nan_size", "negative_size", "crossed",
           "locked", "unknown_kind")


class _Injected:
    def __init__(self, events: EventArrays, bad: np.ndarray):
        self.events, self.bad = events, bad


def _inject(events: EventArrays, every: int) -> _Injected:
    """A copy of ``events`` with a bad tick after every ``every``-th event (kinds rotate)."""
    columns = [list(c) for c in events.columns()]
    out = [[] for _ in columns]
    bad = []
    for i in range(len(events)):
        for k, column in enumerate(columns):
            out[k].append(column[i])
        if i % every == every - 1:
            bad.append(len(out[0]))
            row = [column[i] for column in columns]
            _spoil(row, GARBAGE[(i // every) % len(GARBAGE)])
            for k, v in enumerate(row):
                out[k].append(v)
    return _Injected(_arrays(out), np.array(bad, dtype=np.int64))


def _spoil(row: list, how: str) -> None:
    """Make one event row (ts, kind, price, qty, side, bid, bid_qty, ask, ask_qty) invalid."""
    quote = row[1] == KIND_QUOTE
    if how == "unknown_kind":
        row[1] = 5
    elif how in ("crossed", "locked") and quote:
        row[5] = row[7] + (0.5 if how == "crossed" else 0.0)
    else:
        value = {"nan_price": NAN, "inf_price": INF, "zero_price": 0.0, "negative_price": -1.0,
                 "nan_size": NAN, "negative_size": -1.0, "crossed": NAN, "locked": 0.0}[how]
        if how.endswith("size"):
            row[6 if quote else 3] = value
        else:
            row[5 if quote else 2] = value


def _arrays(columns) -> EventArrays:
    ts, kind = np.array(columns[0], dtype=np.int64), np.array(columns[1], dtype=np.int64)
    return EventArrays(ts, kind, *(np.array(c, dtype=np.float64) for c in columns[2:]))


@st.composite
def streams(draw) -> tuple[EventArrays, list[int]]:
    """Plausible quotes and trades (a mid on a 0.1 grid, sizes that may be zero, ties, backward
    timestamps, long gaps) with garbage ticks mixed in; also the indices of the garbage."""
    n = draw(st.integers(1, 300))
    ts, mid = 1_700_000_000 * SECOND, 100.0
    rows, bad = [], []
    for i in range(n):
        ts += draw(st.sampled_from([0, 1_000, 50_000_000, 400_000_000, -2 * SECOND, 90 * SECOND]))
        mid = max(0.2, mid + 0.1 * draw(st.integers(-2, 2)))
        spread = 0.1 * draw(st.integers(1, 3))
        size = draw(st.sampled_from([0.0, 0.001, 0.5, 3.0, 250.0]))
        if draw(st.booleans()):
            row = [ts, KIND_QUOTE, NAN, NAN, 0.0, mid - spread / 2, size, mid + spread / 2, draw(st.sampled_from([0.0, 1.0, 7.5]))]
        else:
            price = mid + 0.1 * draw(st.integers(-1, 1))
            row = [ts, KIND_TRADE, price, max(size, 0.001), float(draw(st.sampled_from([-1, 0, 1]))), NAN, NAN, NAN, NAN]
        if draw(st.integers(0, 9)) == 0:
            _spoil(row, draw(st.sampled_from(GARBAGE)))
            bad.append(i)
        rows.append(row)
    return _arrays(list(zip(*rows))), bad


PROGRAM_NAMES = tuple(n for n in NAMES if not n.startswith("sincelarge")) + ("sincelarge_x3",)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_no_warm_value_is_ever_nan_or_inf(stream):
    events, bad = stream
    program = compile_program(PROGRAM_NAMES)
    values, progress = run_program(program, events)
    warm = warm_mask(program, progress)
    assert np.isfinite(values[warm]).all(), [program.names[j] for j in np.flatnonzero((warm & ~np.isfinite(values)).any(0))]
    for i in bad:
        if i > 0:
            np.testing.assert_array_equal(values[i], values[i - 1])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_online_equals_batch_on_garbage(stream):
    events, _ = stream
    engine = FeatureEngine(PROGRAM_NAMES)
    online = np.array([engine.update(_Tick(*row)).copy() for row in zip(*(c.tolist() for c in events.columns()))])
    batch, _ = run_program(compile_program(PROGRAM_NAMES), events)
    np.testing.assert_array_equal(online, batch)
