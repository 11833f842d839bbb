"""``FileSource``: the TickSource over a file, or over every supported file in a directory."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline.data.sources.base import TickBatch
from pipeline.data.sources.files import binance_depth_csv, binance_parquet, binance_ws, ccxt_json, tardis
from pipeline.data.sources.files._common import Context
from pipeline.data.sources.files.detect import (
    BINANCE_DEPTH_CSV,
    BINANCE_PARQUET,
    BINANCE_WS_RAW,
    BITFINEX_RAW_BOOK,
    CCXT_TRADES_JSON,
    OHLCV_CSV,
    TARDIS_CSV,
    detect_format,
)
from pipeline.errors import SourceError

log = logging.getLogger(__name__)

PARSERS: dict[str, Callable[[Context], list[TickBatch]]] = {
    BINANCE_WS_RAW: binance_ws.parse,
    TARDIS_CSV: tardis.parse,
    BINANCE_PARQUET: binance_parquet.parse,
    BINANCE_DEPTH_CSV: binance_depth_csv.parse,
    CCXT_TRADES_JSON: ccxt_json.parse,
}
# Recognised, but holding no ticks: reading them is an error that says why.
NOT_TICKS = {
    BITFINEX_RAW_BOOK: "a Bitfinex raw (L3) order-book feed has no timestamps, cannot be stored as ticks",
    OHLCV_CSV: "OHLCV bars (e.g. 1-minute candles) are not ticks (no trades or quotes), cannot be stored as ticks",
}


class FileSource:
    """Ticks from a market-data file, its format detected from its content.

    ``exchange``/``symbol`` fill in what a format does not name (parquet trades: the symbol;
    ccxt JSON, parquet, Binance depth CSV: the exchange). For self-describing formats (raw Binance
    captures, Tardis CSV) a contradicting override is an error, not a relabel.

    A file is parsed whole before its first batch is yielded: it yields everything or raises
    ``SourceError``. A directory yields every supported file in it (recursively, sorted by path);
    files of an unknown or non-tick format are skipped and listed in ``skipped``. All files are
    detected before the first batch, but each is parsed in turn, so an unreadable file in the
    middle raises after the batches of the files before it.
    """

    def __init__(
        self,
        path: str | Path,
        max_bad_lines: int = 0,
        exchange: str | None = None,
        symbol: str | None = None,
    ) -> None:
        if max_bad_lines < 0:
            raise ValueError("max_bad_lines must be >= 0")
        self.path = Path(path).expanduser().absolute()
        self.max_bad_lines = max_bad_lines
        self.exchange = exchange
        self.symbol = symbol
        self.skipped: list[tuple[Path, str]] = []  # (file, the SourceError message) for directories

    @property
    def description(self) -> str:
        return f"file:{self.path}"

    def files(self) -> list[tuple[Path, str]]:
        """The (file, format) pairs this source reads."""
        if not self.path.exists():
            raise SourceError(f"{self.path}: no such file or directory")
        if not self.path.is_dir():
            fmt = detect_format(self.path)
            if fmt in NOT_TICKS:
                raise SourceError(f"{self.path}: {fmt}: {NOT_TICKS[fmt]}")
            return [(self.path, fmt)]
        found: list[tuple[Path, str]] = []
        self.skipped = []
        for path in sorted(self.path.rglob("*")):
            if not path.is_file() or any(part.startswith(".") for part in path.relative_to(self.path).parts):
                continue
            try:
                fmt = detect_format(path)
            except SourceError as exc:
                self.skipped.append((path, str(exc)))
                continue
            if fmt in NOT_TICKS:
                self.skipped.append((path, f"{path}: {fmt}: {NOT_TICKS[fmt]}"))
                continue
            found.append((path, fmt))
        for _, reason in self.skipped:
            log.warning("skipped: %s", reason)
        if not found:
            raise SourceError(f"{self.path}: no supported tick files in this directory")
        return found

    def batches(self) -> Iterator[TickBatch]:
        files = self.files()
        for path, fmt in files:
            ctx = Context(path, f"file:{path}", self.max_bad_lines, self.exchange, self.symbol)
            yield from PARSERS[fmt](ctx)

    def __repr__(self) -> str:
        return f"FileSource({str(self.path)!r})"
