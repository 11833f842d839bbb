"""Live ticks from an exchange through ccxt: REST polling or ccxt.pro websockets.

``ExchangeSource`` is the ``TickSource``; ``convert`` normalises ccxt structures to rows,
``retry`` holds the backoff policy and error redaction, ``rest`` and ``stream`` the two modes.
"""

from pipeline.data.sources.exchange.source import ExchangeSource

__all__ = ["ExchangeSource"]
