"""Exchange-native market ids to ccxt unified symbols, and symbols to path-safe names.

Binance ids carry no separator (``BTCUSDT``), so the base is found by stripping a known quote
asset. Coin-margined perpetuals (``BTCUSD_PERP``) settle in the base coin: ``BTC/USD:BTC``.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from pipeline.errors import SourceError

# Longest first, so that e.g. FDUSD wins over USD.
QUOTE_ASSETS = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USD", "BTC", "ETH", "BNB", "EUR", "TRY")

# Binance COIN-M contract sizes in USD (exchange contract specs).
COIN_M_CONTRACT_USD = {"BTC": 100.0}
COIN_M_DEFAULT_CONTRACT_USD = 10.0

# Exchange names used by data vendors, mapped to ccxt ids.
EXCHANGE_ALIASES = {
    "binance-futures": "binanceusdm",
    "binance-delivery": "binancecoinm",
    "binance": "binance",
    "bitmex": "bitmex",
    "deribit": "deribit",
    "huobi-dm-swap": "huobi",
}


def split_base_quote(market_id: str) -> tuple[str, str]:
    market_id = market_id.upper()
    for quote_asset in QUOTE_ASSETS:
        if market_id.endswith(quote_asset) and len(market_id) > len(quote_asset):
            return market_id[: -len(quote_asset)], quote_asset
    raise SourceError(f"cannot split market id {market_id!r} into base and quote asset")


def binance_unified(market_id: str, market: str) -> str:
    """``market`` is ``spot``, ``usdm`` (USD-M perpetual) or ``coinm`` (COIN-M perpetual)."""
    market_id = market_id.upper()
    if market == "coinm":
        base = market_id.split("_", 1)[0].removesuffix("USD")
        return f"{base}/USD:{base}"
    base, quote_asset = split_base_quote(market_id)
    if market == "spot":
        return f"{base}/{quote_asset}"
    if market == "usdm":
        return f"{base}/{quote_asset}:{quote_asset}"
    raise ValueError(f"unknown Binance market {market!r}")


def coin_m_contract_usd(symbol: str) -> float:
    return COIN_M_CONTRACT_USD.get(symbol.split("/", 1)[0], COIN_M_DEFAULT_CONTRACT_USD)


def path_segment(value: str) -> str:
    """Reversible, filesystem-safe form of a partition value (``BTC/USDT:USDT`` -> ``BTC%2FUSDT%3AUSDT``)."""
    return quote(value, safe="")


def from_path_segment(segment: str) -> str:
    return unquote(segment)
