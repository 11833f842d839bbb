"""The one-call quote path gives, quote for quote, what the three calls it replaced gave: the
feature step, the row gather and the ensemble on the phase's ring."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.features.engine import FeatureEngine
from serving.events import Quote
from serving.runtime.model import ModelRuntime, compiled_ensemble
from serving.runtime.quote_kernel import gather_row

from .conftest import ROLES, STRIDE, market_events


def three_calls(runtime: ModelRuntime, stream) -> list[tuple[float, bool]]:
    """(P(up), ok) per quote the old way, on a separate feature engine and rings."""
    compiled = runtime.compiled
    features = FeatureEngine(runtime.names)
    columns = np.array([runtime.names.index(n) for n in runtime.model_names], dtype=np.intp)
    x = np.zeros(len(columns))
    rings = [compiled.new_ring() for _ in range(STRIDE)]
    phase, out = -1, []
    for event in stream:
        if type(event) is not Quote:
            features.on_trade(event.ts_ns, event.price, event.qty, event.side)
            continue
        values = features.on_quote(event.ts_ns, event.bid, event.bid_qty, event.ask, event.ask_qty)
        if not features.warm:
            out.append((math.nan, False))
            continue
        finite = gather_row(values, columns, x)
        if phase < 0 and not finite:
            out.append((math.nan, False))
            continue
        phase = (phase + 1) % STRIDE
        p = compiled.proba_tick_in(x, *rings[phase])
        out.append((p, finite and p == p))
    return out


@pytest.fixture(scope="module")
def stream(events):
    return market_events(events)


def test_every_quote_equals_the_three_calls(ensemble, stream):
    runtime = ModelRuntime(ROLES, compiled_ensemble(ensemble), STRIDE)
    live = []
    for event in stream:
        if type(event) is Quote:
            _, p, ok = runtime.on_quote(event)
            live.append((p, ok))
        else:
            runtime.on_trade(event)
    expected = three_calls(runtime, stream)
    p_live, ok_live = np.array([p for p, _ in live]), np.array([ok for _, ok in live])
    p_old, ok_old = np.array([p for p, _ in expected]), np.array([ok for _, ok in expected])
    assert np.array_equal(p_live, p_old, equal_nan=True) and np.array_equal(ok_live, ok_old)
    first = int(np.argmax(ok_live))
    assert 0 < first < len(ok_live) - 1000 and ok_live[first:].all()  # cold quotes, the switch-over, warm ones


def test_building_the_runtime_touches_none_of_its_state(ensemble):
    """The start-up call that compiles and faults in runs on copies: the first quote is a first quote."""
    runtime = ModelRuntime(ROLES, compiled_ensemble(ensemble), STRIDE)
    assert not runtime.features._core.any() and runtime._status[0] == -1
    assert np.isnan(runtime.features.values).all()
