"""Assemble a daemon from the product's configuration: the feed, the broker (paper, or live on the
exchange), the journal, the champion watcher, telemetry and the HTTP server, all under
``AUTOSCALP_HOME``."""

from __future__ import annotations

import math
import os
import time
from typing import Any

from pipeline.data.store import TickStore
from pipeline.errors import AutoscalpError
from pipeline.home import autoscalp_home
from serving.backtest.data import exchange_of, parse_time, store_range
from serving.daemon.config import ServeConfig
from serving.daemon.loop import Daemon
from serving.events import MarketLimits


class ServeError(AutoscalpError):
    """The daemon cannot start as configured."""


def market_limits(symbol: str, backtest: Any, venue: Any) -> MarketLimits:
    return MarketLimits(symbol, backtest.max_leverage, backtest.tick_size, backtest.lot_size,
                        backtest.min_notional_usdt, venue.margin.tiers[0].maint_margin_rate)  # fmt: skip


def build_feed(serve: ServeConfig, config: Any, symbol: str, path: str | None, store: TickStore,
               not_before_ns: int = 0, run: int = 1, last_mid: float = 0.0):  # noqa: ANN201  # fmt: skip
    """``not_before_ns``: the paper venue's clock; a restarted daemon's market must not go back in
    the venue's time (its orders would wait in flight until the market caught up, and the venue's
    fills would date the engine's data stale). A synthetic market starts at the wall clock, or after
    the venue's clock when that is ahead (at a speed above 1 event time runs ahead of the wall
    clock), at the venue's ``last_mid`` when it has one, on the path of the journal's ``run``
    (serving/feeds/synthetic.py). A replay starts at the venue's clock when that lies inside its
    range, and is shifted by whole days when the venue is past it (``resume_window``)."""
    speed = serve.speed or None
    if serve.feed == "synthetic":
        from serving.feeds.synthetic import SyntheticFeed

        now = time.time_ns()
        synthetic = config.sources.synthetic
        return SyntheticFeed(symbol, seed=synthetic.seed, speed=speed,
                             start_price=last_mid if last_mid > 0.0 else synthetic.start_price,
                             tick_size=synthetic.tick_size, max_events=serve.queue_soft_limit,
                             start_ns=not_before_ns if not_before_ns > now else None, run=run)  # fmt: skip
    if serve.feed == "replay":
        from serving.feeds.replay import ReplayFeed, resume_window

        exchange = exchange_of(store, symbol)
        first, last = store_range(store, exchange, symbol)
        start, end, shift = resume_window(*_range(path, first, last + 1), not_before_ns)
        return ReplayFeed(store, exchange, symbol, start, end, speed=speed, max_events=serve.queue_soft_limit,
                          shift_ns=shift)  # fmt: skip
    from serving.feeds.exchange import ExchangeFeed

    options = serve.exchange_feed.model_copy(update={"max_events": serve.queue_soft_limit})
    return ExchangeFeed(config.exchange, symbol, options)


def build_broker(config: Any, serve: ServeConfig, symbol: str, limits: MarketLimits, home: Any):  # noqa: ANN201
    """Paper: the simulated venue in ``$AUTOSCALP_HOME/journal``. Live: real orders, only with
    ``serve.live_confirmed`` and API keys in the environment."""
    if serve.broker == "live":
        return _live_broker(config, serve, symbol, limits)
    from serving.brokers.paper import PaperBroker

    return PaperBroker(home.journal / f"paper-{_slug(symbol)}.sqlite", config.venue, [limits],
                       config.backtest.equity_usdt)  # fmt: skip


def _live_broker(config: Any, serve: ServeConfig, symbol: str, limits: MarketLimits):  # noqa: ANN202
    from pipeline.config import Credentials
    from serving.brokers.live import LiveBroker, missing_keys_message

    if not serve.live_confirmed:  # the config refuses it too; a copy with updates is not re-validated
        raise ServeError("serve.broker live needs serve.live_confirmed: true (real orders, real money)")
    credentials = Credentials.from_env(config.exchange.id)
    if not credentials.complete:
        raise ServeError(missing_keys_message(config.exchange.id))
    leverage = {symbol: exchange_leverage(config.engine.leverage, limits)}
    return LiveBroker(config.exchange, credentials, [symbol], leverage)


def exchange_leverage(leverage: Any, limits: MarketLimits) -> int:
    """The exchange's leverage setting: the most the engine may use (its caps,
    serving/risk/leverage.py), rounded up to the integer the exchange takes. Isolated margin then
    locks notional / this per position."""
    cap = min(limits.max_leverage, leverage.symbol_caps.get(limits.symbol, leverage.default_symbol_cap),
              leverage.portfolio_exposure_cap)  # fmt: skip
    return max(1, math.ceil(cap))


def _range(path: str | None, first: int, end: int) -> tuple[int, int]:
    """``--path START:END`` in ns, or ``START/END`` in ISO-8601 (either may be empty), within the
    store's range."""
    if not path:
        return first, end
    start_text, _, end_text = path.partition(":") if "T" not in path else path.partition("/")
    start, stop = parse_time(start_text), parse_time(end_text)
    return max(first, start if start is not None else first), min(end, stop if stop is not None else end)


def build_daemon(config: Any, serve: ServeConfig, symbol: str, path: str | None = None) -> Daemon:
    """``config``: the product config (flows.config.ProductConfig); ``serve`` may override its section."""
    from pipeline.training.tracking import connect
    from serving.daemon.feedback import Feedback
    from serving.runtime.http import ControlServer
    from serving.runtime.model import load_runtime
    from serving.runtime.telemetry import Telemetry
    from serving.runtime.watcher import ChampionWatcher
    from serving.state.journal import Journal

    home = autoscalp_home()
    home.journal.mkdir(parents=True, exist_ok=True)
    store = TickStore(config.data.store_dir or home.store)
    limits = market_limits(symbol, config.backtest, config.venue)
    broker = build_broker(config, serve, symbol, limits, home)
    venue = getattr(broker, "venue", None)  # the paper venue's clock; a live exchange's is the wall's
    # fsynced at every commit when money is real (serving/state/db.py); paper trading is kill -9 safe
    journal = Journal(home.journal / f"daemon-{_slug(symbol)}.sqlite", durable=serve.broker == "live")
    try:
        run = len(journal.notes("restart")) + 1  # the number Daemon.start's begin_run gives this run
        feed = build_feed(serve, config, symbol, path, store, not_before_ns=venue.now + 1 if venue else 0, run=run,
                          last_mid=_last_mid(venue, symbol))  # fmt: skip
    except BaseException:
        broker.close()
        journal.close()
        raise

    def restart_feed(after_ns: int):  # noqa: ANN202 (the watchdog's: the market goes on after event time after_ns)
        not_before = max(venue.now + 1 if venue else 0, after_ns + 1)
        return build_feed(serve, config, symbol, path, store, not_before_ns=not_before, run=run,
                          last_mid=_last_mid(venue, symbol))  # fmt: skip

    telemetry = Telemetry([symbol])
    feedback = Feedback(symbol, serve, telemetry, journal, store.root)  # drift monitors, exports to the store
    watcher = ChampionWatcher(symbol, config.training.tracking, serve.model_poll_s, engine_config=config.engine,
                              default_stride=config.features.sampling.stride,
                              loader=feedback.loader(load_runtime))  # fmt: skip
    # A replay continues the store's stream: the champion warms on the ticks before the replay's start
    # (the watcher replays its ring into a model it loads), and trades from the first tick if that
    # was enough. Other feeds warm it on their first ticks, the engine holding meanwhile (loop.py).
    history = getattr(feed, "history", None)
    for event in history(serve.warmup_events) if history is not None else ():
        watcher.recent.append(event)
    try:
        connect(config.training.tracking)  # a tracking server that is down: no model and an alert, not a crash
        watcher.poll_once()  # the champion, if any, before the first tick
        watcher.serving = watcher.swap_ready() or watcher.serving
    except Exception as exc:  # noqa: BLE001 (no model is a state the daemon runs in, and says why)
        watcher.alert = f"no model loaded at start: {exc}"
    daemon = Daemon(serve, config.engine, symbol, limits, feed, broker, journal, watcher, telemetry,
                    feed_factory=restart_feed)  # fmt: skip
    daemon.feedback = feedback
    token = os.environ.get(serve.control_token_env)
    daemon.control = ControlServer(lambda: _health(daemon), telemetry.exposition, token=token, host=serve.host,
                                   port=serve.http_port).start()  # fmt: skip
    return daemon


def _health(daemon: Daemon) -> dict:
    health = daemon.telemetry.health()
    health["model"] = daemon.watcher.status()
    health["feed_stats"] = daemon.feed.stats()
    health["healing"] = daemon.healing.status()
    return health


def _last_mid(venue: Any, symbol: str) -> float:
    """The paper venue's last mid of ``symbol`` (0.0: none yet, or no paper venue)."""
    if venue is None:
        return 0.0
    from serving.brokers.venue_snapshot import snapshot

    quote = snapshot(venue)["books"].get(symbol, {}).get("quote")  # [symbol, ts, bid, bid_qty, ask, ask_qty]
    return 0.5 * (quote[2] + quote[4]) if quote else 0.0


def _slug(symbol: str) -> str:
    return symbol.replace("/", "-").replace(":", "-")

