"""Importers for market-data files, behind the ``TickSource`` interface.

``FileSource(path)`` detects the format from the content (``detect_format``) and yields one
``TickBatch`` per (exchange, symbol, kind) found. Supported formats:

* ``binance_ws_raw``: raw Binance websocket captures (``<local_ns> <json>`` lines, gzip), USD-M,
  COIN-M and spot: trades, bookTicker quotes, depth diffs and the REST depth snapshot.
* ``tardis_csv``: Tardis.dev CSV: trades, quotes, book_snapshot_N, incremental_book_L2.
* ``binance_parquet``: Binance trades/quotes parquet.
* ``binance_depth_csv``: Binance historical order-book CSV.
* ``ccxt_trades_json``: a (gzip) JSON array of ccxt trades.

``bitfinex_raw_book`` (no timestamps) and ``ohlcv_csv`` (bars, not ticks) are recognised and
refused with a ``SourceError`` saying why. Sources do no quality filtering: bad values (NaN
prices, crossed books, non-MARKET trades) pass through for ``pipeline.data.quality``.
"""

from pipeline.data.sources.files.detect import FORMATS, detect_format
from pipeline.data.sources.files.source import FileSource

__all__ = ["FORMATS", "FileSource", "detect_format"]
