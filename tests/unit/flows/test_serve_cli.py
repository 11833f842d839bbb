"""``autoscalp serve --testnet``: the exchange's sandbox for both the feed and the live broker."""

from __future__ import annotations

from pydantic import SecretStr

from flows.config import ProductConfig
from flows.serve_cli import with_testnet
from pipeline.config import Credentials
from serving.brokers.exchange_orders import trading_client


def test_testnet_switches_the_exchange_to_its_sandbox_and_nothing_else():
    config = ProductConfig()
    assert config.exchange.testnet is False
    sandboxed = with_testnet(config)
    assert sandboxed.exchange.testnet is True
    assert sandboxed.exchange.model_dump(exclude={"testnet"}) == config.exchange.model_dump(exclude={"testnet"})
    assert sandboxed.serve == config.serve and sandboxed.engine == config.engine


def test_the_live_broker_client_of_a_testnet_config_trades_on_binance_demo_urls():
    keys = Credentials(api_key=SecretStr("k" * 16), api_secret=SecretStr("s" * 16))
    live = trading_client(ProductConfig().exchange, keys)
    demo = trading_client(with_testnet(ProductConfig()).exchange, keys)
    assert "demo" not in str(live.urls["api"]) and "testnet" not in str(live.urls["api"])
    assert "demo" in str(demo.urls["api"]) or "testnet" in str(demo.urls["api"])
