"""`autoscalp ingest` and `autoscalp data info` as a user runs them: real processes, real files."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
USDM = "binance_ws_raw/usdm_btcusdt_20240808.gz"


def autoscalp(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "AUTOSCALP_HOME": str(home)}
    env.pop("AUTOSCALP_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "flows", *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO
    )


def store_files(home: Path) -> list[str]:
    root = home / "store"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != ".lock")


def info(home: Path) -> list[dict]:
    result = autoscalp(home, "data", "info", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["partitions"]


@pytest.mark.slow
@pytest.mark.realdata
def test_raw_binance_capture_through_the_prefect_flow_is_stored_exactly_once(shared_data, tmp_path):
    home = tmp_path / "home"
    first = autoscalp(home, "ingest", "--source", "files", "--path", str(shared_data / USDM), "--json")
    assert first.returncode == 0, first.stderr
    [report] = json.loads(first.stdout)
    added = {(s["symbol"], s["kind"]): s["added"] for s in report["streams"]}
    assert added[("BTC/USDT:USDT", "trades")] == 21_313
    assert added[("BTC/USDT:USDT", "quotes")] == 66_089

    partitions = info(home)
    trades = [p for p in partitions if p["kind"] == "trades"]
    assert sum(p["rows"] for p in trades) == 21_313
    assert {p["symbol"] for p in partitions} == {"BTC/USDT:USDT"}
    assert all(p["missing_trade_ids"] == 0 for p in trades)
    files = store_files(home)

    second = autoscalp(home, "ingest", "--source", "files", "--path", str(shared_data / USDM), "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)[0]["added"] == 0
    assert store_files(home) == files
    assert info(home) == partitions


def _bad_inputs(shared_data: Path, tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    real = (shared_data / USDM).read_bytes()
    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes(real[: len(real) // 2])
    corrupt = tmp_path / "corrupt.gz"
    corrupt.write_bytes(gzip.compress(b"1723161255088169167 {\"stream\": \"btcusdt@trade\", \"data\": {\n"))
    wrong = tmp_path / "picture.png"
    wrong.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(256))
    typo = tmp_path / "typo.yaml"
    typo.write_text("sources:\n  default: files\n  synthetic:\n    seeed: 3\n")
    return {
        "truncated gzip": (["--path", str(truncated)], "truncated"),
        "corrupt file": (["--path", str(corrupt)], "line 1"),
        "wrong format": (["--path", str(wrong)], "unrecognised format"),
        "config typo": (["--config", str(typo), "--path", str(shared_data / USDM)], "seeed"),
        "missing file": (["--path", str(tmp_path / "nope.gz")], "nope.gz"),
    }


@pytest.mark.realdata
def test_bad_input_gives_one_line_error_and_leaves_the_store_unchanged(shared_data, tmp_path):
    home = tmp_path / "home"
    # A store that already holds data, which must survive every failed ingest untouched.
    seed = autoscalp(home, "ingest", "--no-prefect", "--source", "synthetic")
    assert seed.returncode == 0, seed.stderr
    before = store_files(home)
    for name, (args, expected) in _bad_inputs(shared_data, tmp_path).items():
        result = autoscalp(home, "ingest", "--no-prefect", "--source", "files", *args)
        assert result.returncode == 2, (name, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (name, result.stderr)
        assert lines[0].startswith("error: ") and expected in lines[0], (name, lines[0])
        assert store_files(home) == before, name


@pytest.mark.slow
@pytest.mark.realdata
def test_bad_input_through_the_prefect_flow_is_also_one_line(shared_data, tmp_path):
    home = tmp_path / "home"
    args, expected = _bad_inputs(shared_data, tmp_path)["truncated gzip"]
    result = autoscalp(home, "ingest", "--source", "files", *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert expected in result.stderr
    assert store_files(home) == []


def test_help_explains_every_command():
    result = subprocess.run([sys.executable, "-m", "flows", "--help"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0
    for command in ("ingest", "data"):
        assert command in result.stdout
    for args in (["ingest", "--help"], ["data", "info", "--help"]):
        result = subprocess.run([sys.executable, "-m", "flows", *args], capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 0 and "--config" in result.stdout, args
