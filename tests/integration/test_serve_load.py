"""Load: the daemon fed 10x the real message rate of the BTCUSDT capture keeps its memory bounded,
never drops a trade, and reports its tick-to-decision latency.

The real daemon (``build_daemon``: paper broker, journal, champion watcher, telemetry, HTTP), no
champion registered, fed by ``LoopedReplayFeed`` over the capture's trades and quotes
(usdm_btcusdt_20240808.gz, ~254 messages/s recorded) at 10x in wall time. The issue asks for 60 s;
this test runs FEED_S = 18 s to stay CI-friendly, with no priming: the engine's features are not
warm within it (they need ~6,000 mid moves, three laps), so the decision path is the short one and
the engine sends no order. bench/bench_serve.py runs the same harness (``run_load``) for 60 s after
three laps of priming, with and without a champion, and records bench/results/serve.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from bench_serve import CAPTURE, load_capture, run_load  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.realdata]

SPEED = 10.0
FEED_S = 18.0
WARMUP_S = 5.0
MAX_RSS_GROWTH_MB = 150.0


def test_ten_times_the_real_rate_keeps_memory_bounded_and_every_trade(shared_data, home, capsys):
    events = load_capture(shared_data / CAPTURE)
    result = run_load(home, events, SPEED, FEED_S, WARMUP_S)  # sets AUTOSCALP_HOME: the fixture restores it

    offered, engine, feed = result["offered"], result["engine"], result["feed_counters"]
    # 10x the capture's rate (its first minutes are a little quieter than its average)
    assert result["offered_per_s"] >= 0.75 * SPEED * result["recorded_per_s"]
    # every trade offered reached the engine; quotes too, unless conflated (allowed, and counted)
    assert feed["dropped"] == 0
    assert engine["trades"] == offered["trades"] > 0
    assert engine["quotes"] + result["conflated_quotes"] == offered["quotes"]
    assert result["stopped_because"] == "the feed ended"  # the daemon drained everything offered
    # memory stays bounded: the whole process's RSS, sampled every second, after the warm-up
    assert result["rss_mb"]["growth_after_warmup"] < MAX_RSS_GROWTH_MB, result["rss_mb"]
    # the daemon's own latency histogram
    latency = result["tick_to_decision_us"]
    assert latency["decisions"] == engine["quotes"]
    assert 0 < latency["p50"] <= latency["p99"]
    with capsys.disabled():
        print(f"\nload x{SPEED:g} for {FEED_S:g} s: {result['offered_per_s']} events/s offered, "
              f"{result['processed_per_s']} processed; trades {engine['trades']}/{offered['trades']}, quotes "
              f"{engine['quotes']} (+{result['conflated_quotes']} conflated); max queue "
              f"{feed['max_queue_depth']}; tick-to-decision p50 {latency['p50']} us, p99 {latency['p99']} us; "
              f"RSS {result['rss_mb']}")  # fmt: skip
