"""``autoscalp serve``: the trading daemon (serving/daemon)."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Optional

import typer
from pydantic import ValidationError

from flows._cli_common import ConfigOption, JsonOption, _config, stdout, user_errors


def serve_command(
    config: ConfigOption = None,
    feed: Annotated[Optional[str], typer.Option(help="exchange | replay | synthetic (default: config serve.feed).")] = None,
    path: Annotated[Optional[str], typer.Option(help="replay: START:END in ns or START/END in ISO-8601 (default: all).")] = None,
    speed: Annotated[Optional[float], typer.Option(help="replay/synthetic: x real time; 0 = as fast as possible.")] = None,
    duration: Annotated[Optional[float], typer.Option(help="Stop after this many seconds (default: until Ctrl-C).")] = None,
    broker: Annotated[Optional[str], typer.Option(help="paper | live (live also needs serve.live_confirmed).")] = None,
    http_port: Annotated[Optional[int], typer.Option(help="Health/metrics/control port on 127.0.0.1 (0: any).")] = None,
    symbol: Annotated[Optional[str], typer.Option("--symbol", "-s", help="Symbol (default: the first configured).")] = None,
    testnet: Annotated[bool, typer.Option("--testnet", help="The exchange's sandbox (Binance: demo trading) for the "
                                          "exchange feed and the live broker (= exchange.testnet: true).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Trade: a feed through the features, the champion ensemble, the engine and the risk managers
    to the paper broker (the simulated venue); journaled in SQLite, /health and /metrics over HTTP,
    the champion swapped in when a new one is promoted."""
    from flows.serve_view import daemon_view, view_mode
    from serving.daemon.build import build_daemon

    cfg = with_testnet(_config(config)) if testnet else _config(config)
    overrides = {k: v for k, v in {"feed": feed, "speed": speed, "broker": broker, "http_port": http_port}.items()
                 if v is not None}  # fmt: skip
    with user_errors():
        try:
            serve = cfg.serve.model_validate({**cfg.serve.model_dump(), **overrides})
        except ValidationError as exc:
            raise typer.BadParameter(_reasons(exc)) from None
        sym = symbol or cfg.symbols[0]
        logging.getLogger("serving").setLevel(logging.INFO)
        daemon = build_daemon(cfg, serve, sym, path)
        daemon.install_signal_handlers()
        stdout.print(f"serving {sym}: feed {serve.feed}, broker {serve.broker}, "
                     f"http://{serve.host}:{daemon.control.port} (/health, /metrics); Ctrl-C stops")  # fmt: skip
        view = daemon_view(daemon, stdout, view_mode(as_json, stdout.is_terminal)).start()
        stats = daemon.run(duration)
        view.join()
        daemon.control.stop()
    summary = {"stopped_because": stats.stopped_because, "events": stats.events, "quotes": stats.quotes,
               "trades": stats.trades, "orders": stats.orders, "fills": stats.fills, "swaps": stats.swaps,
               "health": daemon.telemetry.health(), "feed": daemon.feed.stats()}  # fmt: skip
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        stdout.print(f"stopped ({stats.stopped_because}): {stats.events:,} events, {stats.orders:,} orders, "
                     f"{stats.fills:,} fills, {stats.swaps} model swaps")  # fmt: skip


def with_testnet(cfg):  # noqa: ANN001, ANN201 (flows.config.ProductConfig)
    """``cfg`` with the exchange's sandbox: orders and market data both go to the testnet."""
    return cfg.model_copy(update={"exchange": cfg.exchange.model_copy(update={"testnet": True})})


def _reasons(exc: ValidationError) -> str:
    """Pydantic's messages without its boilerplate (its last line is a link to its docs)."""
    reasons = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        reasons.append(f"serve.{'.'.join(map(str, error['loc']))}: {message}" if error["loc"] else message)
    return "; ".join(reasons)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
