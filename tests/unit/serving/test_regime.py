import math

from serving.config import RegimeConfig
from serving.regime import NORMAL, RANGING, TRENDING, VOLATILE, RegimeDetector

MS = 1_000_000
CALM = (1.0, 0.2, 0.5)  # vol ratio, efficiency, |trend strength|: normal


def feed(detector, reading, n, t0=0, dt_ms=100):
    switches = []
    for i in range(n):
        previous = detector.update(t0 + i * dt_ms * MS, *reading)
        if previous >= 0:
            switches.append((previous, detector.regime))
    return switches


def detector(**overrides):
    return RegimeDetector(RegimeConfig(confirm_ticks=5, min_dwell_ms=0, **overrides))


def test_raw_readings():
    d = detector()
    assert d.classify(2.0, 0.5, 3.0) == VOLATILE  # volatility first
    assert d.classify(1.0, 0.5, 2.0) == TRENDING
    assert d.classify(1.0, 0.5, -2.0) == TRENDING  # down trends too
    assert d.classify(1.0, 0.05, 0.2) == RANGING
    assert d.classify(*CALM) == NORMAL


def test_a_switch_needs_confirmation():
    d = detector()
    assert feed(d, (2.0, 0.2, 0.5), 4) == []
    assert feed(d, (2.0, 0.2, 0.5), 1) == [(NORMAL, VOLATILE)]


def test_no_flapping_around_a_threshold():
    d = detector()
    feed(d, (2.0, 0.2, 0.5), 5)
    assert d.regime == VOLATILE
    # 1.4 is below the 1.6 entry but above the 1.25 exit: it stays volatile
    assert feed(d, (1.4, 0.2, 0.5), 50) == []
    # alternating readings never hold long enough to switch
    d = detector()
    for i in range(100):
        d.update(i * MS, *((2.0, 0.2, 0.5) if i % 3 else CALM))
    assert d.regime == NORMAL
    assert feed(d, (1.0, 0.2, 0.5), 5) == []


def test_leaving_takes_the_exit_threshold():
    d = detector()
    feed(d, (1.0, 0.5, 2.0), 5)
    assert d.regime == TRENDING
    assert feed(d, (1.0, 0.3, 1.2), 20) == []  # weaker, but above the exits
    assert feed(d, (1.0, 0.2, 1.2), 5) == [(TRENDING, NORMAL)]


def test_min_dwell_holds_a_fresh_regime():
    d = RegimeDetector(RegimeConfig(confirm_ticks=1, min_dwell_ms=2_000))
    d.update(0, *CALM)
    assert d.update(1_000 * MS, 2.0, 0.2, 0.5) == -1  # confirmed, but normal began 1 s ago
    assert d.update(2_500 * MS, 2.0, 0.2, 0.5) == NORMAL


def test_nan_keeps_the_regime():
    d = detector()
    feed(d, (2.0, 0.2, 0.5), 5)
    assert feed(d, (math.nan, 0.2, 0.5), 20) == [] and d.regime == VOLATILE
