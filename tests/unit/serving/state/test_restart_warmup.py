"""A restart with a champion loaded: the model's features are cold, which is no model failure. With
``on_restart: resume`` the engine holds until the model's first P(up) (serving/daemon/loop.py): the
resumed position keeps its new stop and is not closed, nothing new opens; with ``flatten`` it is
closed at the first market event. A swapped-in version's tuned strategy parameters are applied at
a flat moment and journaled. The terminal view reads the daemon after the run."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from flows.serve_view import JournalNotes, plain_line, snapshot, with_rates
from pipeline.models.base import make_model
from pipeline.models.ensemble import Ensemble
from pipeline.training.aliases import VersionInfo
from serving.config import EngineConfig
from serving.daemon.config import ServeConfig
from serving.daemon.loop import Daemon
from serving.events import STOP, MarketLimits
from serving.feeds.synthetic import SyntheticFeed
from serving.runtime.model import ModelRuntime, compiled_ensemble
from serving.runtime.telemetry import Telemetry
from serving.runtime.watcher import RecentTicks

FEATURES = ("ret_tick_20", "bookimb_l1", "ofi_tick_100", "rv_tick_50")
# Roles with short warm-ups (the defaults wait for 10,000 trades): the model warms within ~7,000 events;
# the resumed position's stop 2 % away, so that the simulated path does not reach it before.
ENGINE = EngineConfig.model_validate({"features": {"rv_slow": "rv_tick_200", "vol_spike": "volspike_tick_10",
                                                   "bb_z": "bbz_tick_50", "trend_strength": "trend_tick_50",
                                                   "vwap_dev": "vwapdev_tick_50"},
                                      "risk": {"default_stop_loss_bps": 200.0}})  # fmt: skip
QTY = 0.01


@pytest.fixture(scope="module")
def compiled():
    """A logistic-only ensemble on random rows: its P(up) means nothing, it is finite once warm."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, len(FEATURES)))
    y = (X[:, 0] + rng.normal(size=400) > 0).astype(np.int64)
    model = make_model("logistic", None, seed=0).fit(X[:300], y[:300], X[300:], y[300:])
    return compiled_ensemble(Ensemble({"logistic": model}, {"logistic": 1.0}, feature_names=FEATURES))


def runtime(compiled, version: int, engine: EngineConfig = ENGINE) -> ModelRuntime:
    info = VersionInfo("autoscalp-BTC-USDT-USDT", version, ("champion",), {}, "run", None)
    return ModelRuntime(tuple(engine.features.model_dump().values()), compiled, 10, info, engine)


class Champion:
    """The champion watcher's side the daemon calls, holding loaded models (no registry here):
    ``offer`` is swapped in at the daemon's next tick boundary."""

    alert = None

    def __init__(self, serving: ModelRuntime, offer: ModelRuntime | None = None) -> None:
        self.serving, self.offer, self.recent = serving, offer, RecentTicks(10_000)

    def swap_ready(self) -> ModelRuntime | None:
        offer, self.offer = self.offer, None
        if offer is not None:
            self.serving = offer
        return offer

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> dict:
        return {"model": self.serving.version_label, "age_s": None, "alert": None, "warming": None}


def crashed_with_a_long(desk_class, tmp_path):  # noqa: ANN001, ANN201
    """A paper account that died holding +QTY with its stop; opened again as a restart would."""
    desk = desk_class(tmp_path)
    desk.quote(60_000.0, 60_000.1)
    desk.trade(desk.market("old-1", 1, qty=QTY))
    desk.quote(60_000.0, 60_000.1, dt_ms=10)
    desk.trade(desk.stop("old-2", -1, 59_000.0, qty=QTY))
    assert desk.broker.positions()[desk.SYMBOL].qty == QTY
    return desk.restart()


def serve(desk, champion: Champion, policy: str, n_events: int) -> Daemon:  # noqa: ANN001
    symbol, venue = desk.SYMBOL, desk.broker.venue
    feed = SyntheticFeed(symbol, seed=3, n_events=n_events, speed=None, start_price=60_000.05, tick_size=0.1,
                         start_ns=venue.now + 1, run=2)  # fmt: skip
    limits = MarketLimits(symbol, 125.0, 0.01, 0.001, 5.0)  # the desk's
    daemon = Daemon(ServeConfig(on_restart=policy), ENGINE, symbol, limits, feed, desk.broker, desk.journal, champion,
                    Telemetry([symbol]))  # fmt: skip
    daemon.run()
    return daemon


def orders(journal) -> list[tuple]:  # noqa: ANN001
    db = sqlite3.connect(journal.path)
    try:
        return db.execute("SELECT client_id, type, side, reduce_only, intent_ns FROM orders ORDER BY rowid").fetchall()
    finally:
        db.close()


def fills(journal) -> list[tuple]:  # noqa: ANN001
    """(client id, side, ts_ns, qty) of every fill the journal booked (the venue's, once each)."""
    db = sqlite3.connect(journal.path)
    try:
        return db.execute("SELECT client_id, side, ts_ns, qty FROM fills ORDER BY id").fetchall()
    finally:
        db.close()


def test_resume_holds_the_position_with_its_stop_while_the_model_warms(desk_class, tmp_path, compiled):
    desk = crashed_with_a_long(desk_class, tmp_path)
    daemon = serve(desk, Champion(runtime(compiled, 1)), "resume", n_events=8_000)
    journal = desk.journal

    records = journal.decisions(100_000)
    assert not [n for r in records for n in r["notes"] if "model failure" in n or "trim" in n]
    notes = [text for _, _, text in journal.notes("model")]
    assert "autoscalp-BTC-USDT-USDT v1 warming up" in notes[0], notes
    [(warm_ns, _, _)] = [n for n in journal.notes("model") if "warm after" in n[2]]
    # until the model's first P(up): the new run's stop and the cancel of the old orders, nothing else
    early = [o for o in orders(journal) if o[0].startswith("as1-") and o[4] < warm_ns]
    assert early and all(kind == STOP and reduce_only and side == -1 for _, kind, side, reduce_only, _ in early), early
    closing = [f for f in fills(journal) if f[1] == -1 and f[2] < warm_ns]
    assert not closing, closing  # the position was held, not closed, while the model warmed
    assert daemon.engine.warming == "" and daemon.stats.quotes > 0

    # the terminal view reads the same daemon (flows/serve_view.py)
    snap = with_rates(snapshot(daemon, JournalNotes(journal.path)), None)
    assert snap["model"] == "autoscalp-BTC-USDT-USDT v1" and snap["ticks"] == daemon.telemetry.ticks > 0
    assert any(kind == "model" and "warm after" in text for _, kind, text in snap["notes"])
    assert "model autoscalp-BTC-USDT-USDT v1" in plain_line(snap)


def test_flatten_closes_the_position_at_the_first_market_event(desk_class, tmp_path, compiled):
    desk = crashed_with_a_long(desk_class, tmp_path)
    serve(desk, Champion(runtime(compiled, 1)), "flatten", n_events=300)
    closes = [(side, qty) for cid, side, _, qty in fills(desk.journal) if cid.startswith("rs1-")]
    assert closes == [(-1, QTY)]
    assert not [o for o in orders(desk.journal) if o[0].startswith("as1-") and o[1] == STOP]  # nothing to protect


def test_a_swapped_versions_strategy_parameters_apply_when_flat(tmp_path, desk_class, compiled):
    desk = desk_class(tmp_path)
    tuned = ENGINE.model_copy(update={"market_making": ENGINE.market_making.model_copy(
        update={"min_half_spread_bps": 4.5})})  # fmt: skip
    daemon = serve(desk, Champion(runtime(compiled, 1), offer=runtime(compiled, 2, tuned)), "resume", n_events=300)
    assert daemon.engine.config.market_making.min_half_spread_bps == 4.5
    assert daemon.engine.strategies["market_making"]._min_half == pytest.approx(4.5e-4)
    [(_, _, text)] = desk.journal.notes("strategy")
    assert text.startswith("autoscalp-BTC-USDT-USDT v2's strategy parameters: market_making.min_half_spread_bps")
