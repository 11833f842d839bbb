"""Online == batch for every candidate feature, on real ticks and on the simulator.

The serving side (``FeatureEngine``, fed one quote or trade at a time with Python scalars and the
raw depth snapshot and diffs, as the daemon does) and the training side (``run_program`` over
arrays, the depth replayed through the book beforehand) must give the same numbers. Both run the
same compiled step and book, so the tolerance is tight: max |online - batch| <= 1e-9 x the
feature's scale, the largest |value| it takes on the stream (NaN where one side is NaN fails).
Also: after its declared warm-up no feature is NaN or inf on real data, and the lookahead and
warm-up check passes on the real depth features.
"""

from __future__ import annotations

import numpy as np
import pytest

import pyarrow as pa

from pipeline.config import SyntheticSourceConfig
from pipeline.data.schemas import DEPTH, Kind
from pipeline.data.sources.files import FileSource
from pipeline.features.catalog import catalog, compile_program
from pipeline.features.check import check_features, quick_names, synthetic_events
from pipeline.features.core import KIND_DEPTH, KIND_QUOTE, KIND_TRADE
from pipeline.features.engine import FeatureEngine, run_program, warm_mask
from pipeline.features.events import DepthUpdates, EventArrays, depth_updates, events_from_batches

RTOL = 1e-9
GROUP = 161  # features per pass: two [events x group] float arrays stay near 100 MB each
RAW_FILE = "binance_ws_raw/usdm_btcusdt_20240808.gz"


@pytest.fixture(scope="module")
def real_batches(shared_data) -> list:
    return list(FileSource(shared_data / RAW_FILE).batches())


@pytest.fixture(scope="module")
def real_events(real_batches) -> EventArrays:
    events = events_from_batches(real_batches)
    # 21,313 trades + 66,089 book-ticker updates + 6,548 depth updates with a valid book (of 6,551
    # diffs and the REST snapshot: 4 diffs came before the snapshot's lastUpdateId)
    assert len(events) == 93_950 and (events.kind == KIND_DEPTH).sum() == 6_548
    return events


@pytest.fixture(scope="module")
def real_depth(real_batches) -> DepthUpdates:
    return depth_updates(pa.concat_tables(b.rows.select(DEPTH.names) for b in real_batches if b.kind == Kind.DEPTH))


def online_values(events: EventArrays, updates: DepthUpdates | None, names: tuple[str, ...]) -> np.ndarray:
    """Feed the engine tick by tick, as the daemon would: Python scalars, one call per tick, and the
    raw depth updates in sequence (those that leave no valid book, and so have no event in the
    batch stream, just before the next that does)."""
    engine = FeatureEngine(names)
    raw = iter(updates if updates is not None else ())
    out = np.empty((len(events), len(names)))
    rows = zip(*(column.tolist() for column in events.columns()))
    for i, (ts_ns, kind, price, qty, side, bid, bid_qty, ask, ask_qty) in enumerate(rows):
        if kind == KIND_QUOTE:
            out[i] = engine.on_quote(ts_ns, bid, bid_qty, ask, ask_qty)
        elif kind == KIND_TRADE:
            out[i] = engine.on_trade(ts_ns, price, qty, side)
        else:
            applied = engine.book.outcomes["applied"]
            while engine.book.outcomes["applied"] == applied:
                out[i] = engine.on_depth(next(raw))
    return out


def compare_all(events: EventArrays, updates: DepthUpdates | None = None) -> tuple[float, str, dict[str, int]]:
    """(worst |online - batch| / scale, its feature, warm rows that are NaN/inf per feature)."""
    names = tuple(catalog())
    worst, worst_name, nonfinite = 0.0, "", {}
    for lo in range(0, len(names), GROUP):
        group = names[lo:lo + GROUP]
        program = compile_program(group)
        batch, progress = run_program(program, events)
        online = online_values(events, updates, group)
        assert np.array_equal(np.isnan(online), np.isnan(batch)), "online and batch disagree on NaN"
        finite = np.isfinite(batch)
        scale = np.where(finite, np.abs(batch), 0.0).max(axis=0)
        scale[scale == 0.0] = 1.0
        with np.errstate(invalid="ignore"):
            error = np.where(finite, np.abs(online - batch), 0.0).max(axis=0) / scale
        j = int(np.argmax(error))
        if error[j] > worst:
            worst, worst_name = float(error[j]), group[j]
        warm = warm_mask(program, progress)
        for k in np.flatnonzero((warm & ~finite).any(axis=0)):
            nonfinite[group[k]] = int((warm[:, k] & ~finite[:, k]).sum())
    return worst, worst_name, nonfinite


@pytest.mark.slow
@pytest.mark.realdata
def test_every_candidate_online_equals_batch_on_real_ticks(real_events, real_depth):
    worst, name, nonfinite = compare_all(real_events, real_depth)
    print(f"real: max |online - batch| / max|v| = {worst:.3g} ({name})")
    assert worst <= RTOL, f"{name}: online and batch differ by {worst:.3g} x its scale"
    assert not nonfinite, f"NaN/inf after the declared warm-up: {nonfinite}"


@pytest.mark.slow
def test_every_candidate_online_equals_batch_on_the_simulator():
    events = synthetic_events(SyntheticSourceConfig(ticks=30_000), "BTC/USDT:USDT")
    worst, name, nonfinite = compare_all(events)
    print(f"synthetic: max |online - batch| / max|v| = {worst:.3g} ({name})")
    assert worst <= RTOL, f"{name}: online and batch differ by {worst:.3g} x its scale"
    assert not nonfinite, f"NaN/inf after the declared warm-up: {nonfinite}"


@pytest.mark.realdata
def test_real_ticks_warm_most_candidates(real_events):
    """The 11 minutes of real ticks warm up every feature whose declared warm-up they hold, and
    those are most of the catalog (the rest need hours: 300 s windows, 2000-trade averages, or more
    than the 6,548 depth updates: 1000-update depth averages, depth z-scores over 2000)."""
    names = tuple(catalog())
    program = compile_program(names)
    _, progress = run_program(program, real_events, np.array([len(real_events) - 1]))
    warm = warm_mask(program, progress, real_events)[0]
    depth = np.array([catalog()[n].family.is_depth for n in names])
    assert warm[~depth].sum() > 0.75 * (~depth).sum() and warm[depth].sum() > 0.6 * depth.sum()


@pytest.mark.realdata
def test_the_check_passes_on_real_depth_features(real_events):
    """No depth feature reads the future, and those the 11 minutes can verify hold their declared
    warm-ups (restarts replay the book from the snapshot first, as a daemon fetches one)."""
    names = tuple(n for n, spec in catalog().items() if spec.family.is_depth) + quick_names()
    report = check_features(real_events, names, cuts=3, starts=3, seed=1, source=RAW_FILE)
    assert report.ok, report.summary()
    verified = [n for n in names if n not in report.unverified and catalog()[n].family.is_depth]
    assert len(verified) > 100
