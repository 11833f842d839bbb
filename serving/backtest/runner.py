"""A backtest from end to end: replay data, signals, the engine against the simulated venue, the
ledger and its summary, and the same window for the baselines.

Baselines run on exactly the same events, features, venue and engine configuration:
- ``no-model``: each strategy on its own rules, the model's say removed (P(up) = 0.5 everywhere and
  the strategies' model gates and skews set to zero, so a rule signal alone may trade);
- ``flat``: never trades (the zero line every net PnL is compared with).

Exact replay: the provenance of every run (model version, data fingerprint, config hash, code
version) is returned with it, and the same inputs give the same fills, so the same trade-list hash.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.training.tracking import git_sha
from serving.backtest.config import BacktestConfig
from serving.backtest.data import ReplayData
from serving.backtest.loop import LoopOutput, ReplayLoop
from serving.backtest.signals import Signals, compute_signals
from serving.config import EngineConfig
from serving.engine import Engine
from serving.events import MarketLimits
from serving.metrics import EQUITY_COLUMNS, FILL_COLUMNS, FUNDING_COLUMNS, Ledger, summarise
from serving.venues.config import VenueConfig
from serving.venues.simulated import SimulatedVenue

NO_MODEL, FLAT = "no-model", "flat"


@dataclass(frozen=True)
class BacktestRun:
    name: str
    summary: dict
    ledger: Ledger
    counts: dict  # events, records, orders, cancels, vetoes
    seconds: dict  # where the time went


@dataclass(frozen=True)
class BacktestResult:
    main: BacktestRun
    baselines: dict[str, BacktestRun]
    provenance: dict
    seconds: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"provenance": self.provenance, "summary": self.main.summary, "counts": self.main.counts,
                "baselines": {k: v.summary for k, v in self.baselines.items()}, "seconds": self.seconds}


def market_limits(symbol: str, config: BacktestConfig, venue: VenueConfig) -> MarketLimits:
    return MarketLimits(symbol, config.max_leverage, config.tick_size, config.lot_size, config.min_notional_usdt,
                        venue.margin.tiers[0].maint_margin_rate)  # fmt: skip


def without_model(config: EngineConfig) -> EngineConfig:
    """The engine configuration of the no-model baseline: every model gate and skew at zero."""
    raw = config.model_dump()
    raw["mean_reversion"]["model_edge"] = 0.0
    raw["momentum_breakout"]["model_edge"] = 0.0
    raw["market_making"]["model_skew"] = 0.0
    return EngineConfig.model_validate(raw)


def replay(data: ReplayData, signals: Signals, engine_config: EngineConfig, venue_config: VenueConfig,
           config: BacktestConfig, name: str, progress: Callable[[int, int], None] | None = None) -> BacktestRun:  # fmt: skip
    """One engine + venue pass over the window."""
    started = time.perf_counter()
    limits = market_limits(data.symbol, config, venue_config)
    engine = Engine(engine_config, signals.names, [limits], config.equity_usdt)
    venue = SimulatedVenue(venue_config, [limits], config.equity_usdt)
    out = ReplayLoop(engine, venue, data, signals, config.clock_ms, config.equity_sample_ms).run(progress)
    loop_s = time.perf_counter() - started
    ledger = to_ledger(out, config.equity_usdt, data.start_ns, data.end_ns)
    summary = summarise(ledger)
    counts = {"events": out.events, "records": out.records, "orders": out.orders, "cancels": out.cancels,
              "vetoes": out.vetoes, "fills": len(out.fills)}
    return BacktestRun(name, summary, ledger, counts, {"loop_s": loop_s, "summary_s": time.perf_counter() - started - loop_s})


def flat_run(data: ReplayData, config: BacktestConfig) -> BacktestRun:
    out = LoopOutput()
    mid = _first_mid(data)
    for t in (data.start_ns, int(data.events.ts_ns[-1])):
        out.equity.append((t, config.equity_usdt, 0.0, 0.0, 0.0, mid, "normal"))
    ledger = to_ledger(out, config.equity_usdt, data.start_ns, data.end_ns)
    return BacktestRun(FLAT, summarise(ledger), ledger, {"events": data.window_events, "fills": 0}, {})


def to_ledger(out: LoopOutput, equity: float, start_ns: int, end_ns: int) -> Ledger:
    frame = pd.DataFrame(out.equity, columns=list(EQUITY_COLUMNS))
    frame = frame.drop_duplicates("ts_ns", keep="last").reset_index(drop=True)
    return Ledger(
        initial_equity_usdt=equity,
        equity=frame.astype({"ts_ns": "int64"}),
        fills=pd.DataFrame(out.fills, columns=list(FILL_COLUMNS)).astype({"ts_ns": "int64", "side": "int64"}),
        funding=pd.DataFrame(out.funding, columns=list(FUNDING_COLUMNS)).astype({"ts_ns": "int64"}),
        liquidations=out.liquidations,
        start_ns=start_ns,
        end_ns=end_ns,
    )


def run_backtest(data: ReplayData, ensemble: Any | None, stride: int, engine_config: EngineConfig,
                 venue_config: VenueConfig, config: BacktestConfig, model: dict | None = None,
                 baselines: bool = True, progress: Callable[[int, int], None] | None = None) -> BacktestResult:  # fmt: skip
    """The model's run (or the no-model run when ``ensemble`` is None) and the baselines.

    ``model`` describes the version for the provenance (name, version, uri)."""
    t0 = time.perf_counter()
    signals = compute_signals(data.events, tuple(engine_config.features.model_dump().values()), ensemble, stride)
    t1 = time.perf_counter()
    if ensemble is not None:
        main = replay(data, signals, engine_config, venue_config, config, "model", progress)
    else:
        main = replay(data, neutral(signals), without_model(engine_config), venue_config, config, NO_MODEL, progress)
    runs: dict[str, BacktestRun] = {}
    if baselines:
        if ensemble is not None:
            runs[NO_MODEL] = replay(data, neutral(signals), without_model(engine_config), venue_config, config, NO_MODEL)
        runs[FLAT] = flat_run(data, config)
    provenance = {
        "symbol": data.symbol, "exchange": data.exchange, "start_ns": data.start_ns, "end_ns": data.end_ns,
        "events": data.window_events, "model": model or {"name": None, "version": None, "uri": None},
        "data_fingerprint": data.fingerprint,
        "config_hash": run_config_hash(engine_config, venue_config, config, stride),
        "code_version": git_sha(),
        "trade_list_hash": main.summary.get("trade_list_hash"),
    }
    seconds = {"signals_s": t1 - t0, "main_loop_s": main.seconds.get("loop_s", 0.0),
               "total_s": time.perf_counter() - t0}
    return BacktestResult(main, runs, provenance, seconds)


def run_config_hash(engine: EngineConfig, venue: VenueConfig, config: BacktestConfig, stride: int) -> str:
    blob = json.dumps({"engine": engine.model_dump(mode="json"), "venue": venue.model_dump(mode="json"),
                       "backtest": config.model_dump(mode="json"), "stride": stride}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def neutral(signals: Signals) -> Signals:
    """The same features with the model's say removed: P(up) 0.5 wherever the features are warm."""
    warm = np.isfinite(signals.features).all(axis=1)
    return Signals(signals.names, signals.quote_index, signals.features, np.where(warm, 0.5, np.nan), warm)


def _first_mid(data: ReplayData) -> float:
    events = data.events
    bid, ask = events.bid[data.start:], events.ask[data.start:]
    both = np.flatnonzero(np.isfinite(bid) & np.isfinite(ask))
    return float(0.5 * (bid[both[0]] + ask[both[0]])) if len(both) else float("nan")
