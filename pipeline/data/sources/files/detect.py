"""Which format a file holds, decided from its content (magic bytes, first lines, CSV header),
never from its name alone."""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import re
import zlib
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.data.sources.files._common import GZIP_MAGIC, clip
from pipeline.errors import SourceError

BINANCE_WS_RAW = "binance_ws_raw"
TARDIS_CSV = "tardis_csv"
BINANCE_PARQUET = "binance_parquet"
BINANCE_DEPTH_CSV = "binance_depth_csv"
CCXT_TRADES_JSON = "ccxt_trades_json"
BITFINEX_RAW_BOOK = "bitfinex_raw_book"
OHLCV_CSV = "ohlcv_csv"

FORMATS = (
    BINANCE_WS_RAW,
    TARDIS_CSV,
    BINANCE_PARQUET,
    BINANCE_DEPTH_CSV,
    CCXT_TRADES_JSON,
    BITFINEX_RAW_BOOK,
    OHLCV_CSV,
)

PREFIX_BYTES = 64 << 10
PARQUET_MAGIC = b"PAR1"
# Formats we can name but not read, for a clearer "unrecognised format" message.
OTHER_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"PK\x03\x04": "a zip archive",
    b"BZh": "a bzip2 file",
    b"\xfd7zXZ": "an xz file",
    b"\x28\xb5\x2f\xfd": "a zstd file",
    b"%PDF": "a PDF document",
    b"\x7fELF": "an executable",
}
RAW_LINE = re.compile(rb"^\d{10,20} [\[{]")

TARDIS_PREFIX = ("exchange", "symbol", "timestamp", "local_timestamp")
TARDIS_TRADES = {"id", "side", "price", "amount"}
TARDIS_QUOTES = {"ask_amount", "ask_price", "bid_price", "bid_amount"}
TARDIS_INCREMENTAL = {"is_snapshot", "side", "price", "amount"}
DEPTH_CSV = {"symbol", "timestamp", "first_update_id", "last_update_id", "side", "update_type", "price", "qty"}
OHLCV = {"open", "high", "low", "close"}
PARQUET_TRADES = {"timestamp", "trade_id", "price", "quantity", "buyer_maker"}
PARQUET_QUOTES = {"timestamp", "ask", "bid", "ask_size", "bid_size"}


def detect_format(path: Path) -> str:
    """One of ``FORMATS``; SourceError for a missing, truncated or unrecognised file."""
    path = Path(path)
    if path.is_dir():
        raise SourceError(f"{path}: is a directory, not a file")
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(PREFIX_BYTES)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not head:
        raise SourceError(f"{path}: unrecognised format (empty file)")
    if head.startswith(PARQUET_MAGIC):
        return _parquet_kind(path)
    text = _gunzip_prefix(path) if head.startswith(GZIP_MAGIC) else head
    return _text_kind(path, text, gzipped=head.startswith(GZIP_MAGIC))


def parquet_kind(path: Path) -> str:
    """``trades`` or ``quotes``: which Binance parquet layout the file has."""
    names = set(pq.read_schema(path).names)
    if PARQUET_TRADES <= names:
        return "trades"
    if PARQUET_QUOTES <= names:
        return "quotes"
    raise SourceError(f"{path}: unrecognised format (parquet with columns {sorted(names)})")


def tardis_kind(path: Path, header: list[str]) -> str:
    """``trades``, ``quotes``, ``book_snapshot`` or ``incremental_book_L2``."""
    names = set(header)
    if TARDIS_QUOTES <= names:
        return "quotes"
    if "is_snapshot" in names and TARDIS_INCREMENTAL <= names:
        return "incremental_book_L2"
    if TARDIS_TRADES <= names:
        return "trades"
    if "asks[0].price" in names or "bids[0].price" in names:
        return "book_snapshot"
    raise SourceError(f"{path}: unrecognised format (Tardis CSV of an unsupported data type, columns {header[4:12]}…)")


def _parquet_kind(path: Path) -> str:
    try:
        parquet_kind(path)
    except SourceError:
        raise
    except Exception as exc:  # pyarrow raises several types for a damaged footer
        raise SourceError(f"{path}: corrupt parquet ({' '.join(str(exc).split())[:200]})") from None
    return BINANCE_PARQUET


def _gunzip_prefix(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as handle:
            text = handle.read(PREFIX_BYTES)
    except EOFError as exc:
        raise SourceError(f"{path}: truncated gzip ({exc})") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise SourceError(f"{path}: corrupt gzip ({exc})") from None
    if not text:
        raise SourceError(f"{path}: unrecognised format (empty gzip)")
    return text


def _text_kind(path: Path, data: bytes, gzipped: bool) -> str:
    container = "gzip holding " if gzipped else ""
    if not gzipped:
        for magic, name in OTHER_MAGIC.items():
            if data.startswith(magic):
                raise SourceError(f"{path}: unrecognised format ({name})")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if b"\x00" in data or _undecodable(data):
        first_line = clip(data.split(b"\n", 1)[0])[:60]
        raise SourceError(f"{path}: unrecognised format ({container}binary data; line 1 is not text: {first_line!r})")
    lines = data.split(b"\n")
    if len(lines) > 1:
        lines = lines[:-1]  # the last one may be cut by the prefix
    sample = [line for line in lines[:50] if line.strip()]
    if not sample:
        raise SourceError(f"{path}: unrecognised format ({container}blank text)")
    raw = sum(1 for line in sample if RAW_LINE.match(line))
    if raw and raw * 2 >= len(sample):
        return BINANCE_WS_RAW
    stripped = data.lstrip()
    if stripped.startswith(b"["):
        return _json_kind(path, stripped.decode("utf-8", "replace"))
    if stripped.startswith(b"{"):
        raise SourceError(f"{path}: unrecognised format ({container}a JSON object, not a supported layout)")
    header = next(csv.reader(io.StringIO(sample[0].decode("utf-8", "replace"))), [])
    header = [name.strip().strip('"') for name in header]
    names = set(header)
    if tuple(header[:4]) == TARDIS_PREFIX:
        tardis_kind(path, header)
        return TARDIS_CSV
    if DEPTH_CSV <= names:
        return BINANCE_DEPTH_CSV
    if OHLCV <= names:
        return OHLCV_CSV
    if len(header) > 1:
        raise SourceError(f"{path}: unrecognised format (CSV with unknown columns {header[:10]})")
    raise SourceError(
        f"{path}: unrecognised format ({container}text; line 1 is not a known header or message: "
        f"{clip(sample[0])[:80]!r})"
    )


def _json_kind(path: Path, text: str) -> str:
    """A JSON array: ccxt trade dicts, or Bitfinex websocket messages (first item an event)."""
    start = text.index("[") + 1
    while start < len(text) and text[start].isspace():
        start += 1
    try:
        first, _ = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError:
        first = None
    if isinstance(first, dict):
        if {"timestamp", "price", "amount"} <= set(first) and ("id" in first or "symbol" in first):
            return CCXT_TRADES_JSON
        if "event" in first:
            return BITFINEX_RAW_BOOK
    if isinstance(first, list) and len(first) == 2 and isinstance(first[0], int):
        return BITFINEX_RAW_BOOK
    raise SourceError(f"{path}: unrecognised format (a JSON array whose first item is neither a ccxt trade nor a Bitfinex message)")


def _undecodable(data: bytes) -> bool:
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, final=False)  # a cut last char is fine
    except UnicodeDecodeError:
        return True
    return False
