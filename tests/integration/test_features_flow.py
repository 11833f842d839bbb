"""`autoscalp features build` as a user runs it: the Prefect flow (temporary local server) in a real
process, on every candidate that fits the warm-up budget, twice: the second run extracts nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.config import AppConfig, QualityConfig, SyntheticSourceConfig
from pipeline.data.ingest import ingest
from pipeline.data.sources.synthetic import SyntheticSource
from pipeline.data.store import TickStore
from pipeline.features.selection import eligible_candidates, load_selection, selection_history

REPO = Path(__file__).resolve().parents[2]
SYMBOL = "BTC/USDT:USDT"


def autoscalp(home: Path, *args: str, timeout: float = 420) -> subprocess.CompletedProcess:
    env = {**os.environ, "AUTOSCALP_HOME": str(home)}
    for key in ("AUTOSCALP_CONFIG", "PREFECT_API_URL", "PREFECT_HOME"):
        env.pop(key, None)
    return subprocess.run(
        [sys.executable, "-m", "flows", *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO
    )


@pytest.mark.slow
def test_features_flow_builds_each_day_then_selects_and_a_second_run_reuses_everything(tmp_path):
    home = tmp_path / "home"
    # ~2.6 hours across midnight: two days, the first (~2.2 h) longer than the default warm-up
    # budget, the second warmed up by looking back into the first.
    start = datetime(2024, 1, 1, 21, 45, tzinfo=timezone.utc)
    source = SyntheticSource(SyntheticSourceConfig(ticks=160_000, start=start), (SYMBOL,))
    ingest(source, TickStore(home / "store"), QualityConfig())

    first = autoscalp(home, "features", "build", "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    partitions = report["partitions"]
    assert [(p["date"], p["reused"]) for p in partitions] == [("2024-01-01", False), ("2024-01-02", False)]
    assert all(p["rows"] > 0 and set(p["label_counts"]) == {"-1", "0", "1"} for p in partitions)
    candidates = eligible_candidates(AppConfig().features.warmup_budget, depth=False)  # the simulator has no depth
    files = sorted((home / "features" / "datasets").rglob("*.parquet"))
    assert len(files) == 2
    assert pq.read_schema(files[0]).names == ["ts_ns", *candidates, "label", "fwd_return", "exit_ts_ns", "warm"]

    selection = report["selection"]
    assert len(selection["names"]) == 25 and len(set(selection["names"])) == 25
    assert set(selection["names"]) <= set(candidates) and selection["params"]["candidates"] == len(candidates)
    assert load_selection(home / "features" / "selection.json").names == tuple(selection["names"])
    assert len(selection_history(home / "features")) == len(candidates)

    written = {f: f.stat().st_mtime_ns for f in files}
    second = autoscalp(home, "features", "build", "--json")
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert [p["reused"] for p in again["partitions"]] == [True, True]
    assert again["selection"] == selection and again["dataset"] == report["dataset"]
    assert {f: f.stat().st_mtime_ns for f in files} == written  # nothing rewritten
    assert len(selection_history(home / "features")) == len(candidates)  # the same selection, recorded once
