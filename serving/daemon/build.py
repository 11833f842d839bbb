"""Assemble a daemon from the product's configuration: the feed, the paper broker, the journal, the
champion watcher, telemetry and the HTTP server, all under ``AUTOSCALP_HOME``."""

from __future__ import annotations

import os
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


def build_feed(serve: ServeConfig, config: Any, symbol: str, path: str | None, store: TickStore):  # noqa: ANN201
    speed = serve.speed or None
    if serve.feed == "synthetic":
        from serving.feeds.synthetic import SyntheticFeed

        return SyntheticFeed(symbol, seed=config.sources.synthetic.seed, speed=speed,
                             start_price=config.sources.synthetic.start_price,
                             tick_size=config.sources.synthetic.tick_size, max_events=serve.queue_soft_limit)  # fmt: skip
    if serve.feed == "replay":
        from serving.feeds.replay import ReplayFeed

        exchange = exchange_of(store, symbol)
        first, last = store_range(store, exchange, symbol)
        start, end = _range(path, first, last + 1)
        return ReplayFeed(store, exchange, symbol, start, end, speed=speed, max_events=serve.queue_soft_limit)
    from serving.feeds.exchange import ExchangeFeed, ExchangeFeedConfig

    return ExchangeFeed(config.exchange, symbol, ExchangeFeedConfig(max_events=serve.queue_soft_limit))


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
    from serving.brokers.paper import PaperBroker
    from serving.runtime.http import ControlServer
    from serving.runtime.telemetry import Telemetry
    from serving.runtime.watcher import ChampionWatcher
    from serving.state.journal import Journal

    if serve.broker == "live":
        raise ServeError("the live broker (ccxt) is not built yet: serve with --broker paper")
    home = autoscalp_home()
    home.journal.mkdir(parents=True, exist_ok=True)
    store = TickStore(config.data.store_dir or home.store)
    limits = market_limits(symbol, config.backtest, config.venue)
    feed = build_feed(serve, config, symbol, path, store)
    broker = PaperBroker(home.journal / f"paper-{_slug(symbol)}.sqlite", config.venue, [limits],
                         config.backtest.equity_usdt)  # fmt: skip
    journal = Journal(home.journal / f"daemon-{_slug(symbol)}.sqlite")
    connect(config.training.tracking)
    watcher = ChampionWatcher(symbol, config.training.tracking, serve.model_poll_s, engine_config=config.engine,
                              default_stride=config.features.sampling.stride)  # fmt: skip
    try:
        watcher.poll_once()  # the champion, if any, before the first tick
        watcher.serving = watcher.swap_ready() or watcher.serving
    except Exception as exc:  # noqa: BLE001 (no model is a state the daemon runs in, and says why)
        watcher.alert = f"no model loaded at start: {exc}"
    telemetry = Telemetry([symbol])
    daemon = Daemon(serve, config.engine, symbol, limits, feed, broker, journal, watcher, telemetry)
    token = os.environ.get(serve.control_token_env)
    daemon.control = ControlServer(lambda: _health(daemon), telemetry.exposition, token=token, host=serve.host,
                                   port=serve.http_port).start()  # fmt: skip
    return daemon


def _health(daemon: Daemon) -> dict:
    health = daemon.telemetry.health()
    health["model"] = daemon.watcher.status()
    health["feed_stats"] = daemon.feed.stats()
    return health


def _slug(symbol: str) -> str:
    return symbol.replace("/", "-").replace(":", "-")

