"""Online == batch for every candidate feature, on real ticks and on the simulator.

The serving side (``FeatureEngine``, fed one quote or trade at a time with Python scalars, as the
daemon does) and the training side (``run_program`` over arrays) must give the same numbers. Both
run the same compiled step, so the tolerance is tight: max |online - batch| <= 1e-9 x the
feature's scale, the largest |value| it takes on the stream (NaN where one side is NaN fails).
Also: after its declared warm-up no feature is NaN or inf on real data.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import SyntheticSourceConfig
from pipeline.data.sources.files import FileSource
from pipeline.features.catalog import catalog, compile_program
from pipeline.features.check import synthetic_events
from pipeline.features.core import KIND_QUOTE
from pipeline.features.engine import FeatureEngine, run_program, warm_mask
from pipeline.features.events import EventArrays, events_from_batches

RTOL = 1e-9
GROUP = 161  # features per pass: two [events x group] float arrays stay near 100 MB each
RAW_FILE = "binance_ws_raw/usdm_btcusdt_20240808.gz"


@pytest.fixture(scope="module")
def real_events(shared_data) -> EventArrays:
    events = events_from_batches(FileSource(shared_data / RAW_FILE).batches())
    assert len(events) == 87_402  # 21,313 trades + 66,089 book-ticker updates
    return events


def online_values(events: EventArrays, names: tuple[str, ...]) -> np.ndarray:
    """Feed the engine tick by tick, as the daemon would: Python scalars, one call per tick."""
    engine = FeatureEngine(names)
    out = np.empty((len(events), len(names)))
    rows = zip(*(column.tolist() for column in events.columns()))
    for i, (ts_ns, kind, price, qty, side, bid, bid_qty, ask, ask_qty) in enumerate(rows):
        if kind == KIND_QUOTE:
            out[i] = engine.on_quote(ts_ns, bid, bid_qty, ask, ask_qty)
        else:
            out[i] = engine.on_trade(ts_ns, price, qty, side)
    return out


def compare_all(events: EventArrays) -> tuple[float, str, dict[str, int]]:
    """(worst |online - batch| / scale, its feature, warm rows that are NaN/inf per feature)."""
    names = tuple(catalog())
    worst, worst_name, nonfinite = 0.0, "", {}
    for lo in range(0, len(names), GROUP):
        group = names[lo:lo + GROUP]
        program = compile_program(group)
        batch, progress = run_program(program, events)
        online = online_values(events, group)
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
def test_every_candidate_online_equals_batch_on_real_ticks(real_events):
    worst, name, nonfinite = compare_all(real_events)
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
    those are most of the catalog (the rest need hours: 300 s windows, 2000-trade averages)."""
    names = tuple(catalog())
    program = compile_program(names)
    _, progress = run_program(program, real_events, np.array([len(real_events) - 1]))
    warm = warm_mask(program, progress, real_events)[0]
    assert warm.sum() > 0.75 * len(names)
