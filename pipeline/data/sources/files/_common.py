"""Plumbing shared by the file importers: opening (gzip or plain), unparseable-line accounting,
bulk column conversion, stable ids and batch assembly.

Every importer parses its whole file before returning anything, so a file either yields all its
batches or raises one ``SourceError`` (naming the file and the problem) and yields nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa

from pipeline.data.schemas import Kind, conform
from pipeline.data.sources.base import TickBatch, rejects_table
from pipeline.data.symbols import binance_unified
from pipeline.errors import SourceError

GZIP_MAGIC = b"\x1f\x8b"
RAW_TEXT_LIMIT = 500  # characters of a rejected line kept in quarantine
READ_CHUNK = 8 << 20  # bytes of decompressed text split into lines at a time
NS_PER_MS = 1_000_000
NS_PER_US = 1_000
MAX_MS = 9_000_000_000_000  # ms timestamps above this overflow int64 nanoseconds

# Which Binance market a ccxt exchange id denotes, for files that name only a market id.
BINANCE_MARKETS = {"binance": "spot", "binanceusdm": "usdm", "binancecoinm": "coinm"}


@dataclass(frozen=True)
class Context:
    """What a parser needs besides the bytes: where they come from and the caller's choices."""

    path: Path
    source: str  # ``file:/abs/path``, written into quarantine rows
    max_bad_lines: int
    exchange: str | None  # override for formats that do not name the exchange
    symbol: str | None  # override for formats that do not name the symbol

    def error(self, problem: str) -> SourceError:
        return SourceError(f"{self.path}: {problem}")


# --- reading ---------------------------------------------------------------------------------


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


@contextmanager
def open_binary(path: Path) -> Iterator[IO[bytes]]:
    """The file's decompressed bytes; gzip errors become SourceErrors naming the file."""
    try:
        handle: IO[bytes] = gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")
    except OSError as exc:
        raise SourceError(f"{path}: cannot open: {exc.strerror or exc}") from None
    try:
        with handle:
            yield handle
    except EOFError as exc:
        raise SourceError(f"{path}: truncated gzip ({exc})") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise SourceError(f"{path}: corrupt gzip ({exc})") from None


def read_all(path: Path) -> bytes:
    with open_binary(path) as handle:
        return handle.read()


def iter_line_blocks(path: Path) -> Iterator[tuple[int, list[bytes]]]:
    """(number of the block's first line, lines without newline) over a gzip or plain text
    file, a few MB at a time: parsers loop over each block without a per-line generator."""
    with open_binary(path) as handle:
        number = 1
        rest = b""
        while True:
            chunk = handle.read(READ_CHUNK)
            if not chunk:
                break
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            yield number, lines
            number += len(lines)
        if rest:
            yield number, [rest]


def iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without its newline) over a gzip or plain text file."""
    for first, lines in iter_line_blocks(path):
        yield from enumerate(lines, first)


@contextmanager
def open_text(path: Path) -> Iterator[IO[str]]:
    """The file as text (UTF-8, BOM stripped, CSV-ready newlines)."""
    with open_binary(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
        yield text


def raw_lines(path: Path, wanted: set[int]) -> dict[int, str]:
    """The text of a few lines, re-read from the file (for rejects found after parsing)."""
    found: dict[int, str] = {}
    if not wanted:
        return found
    last = max(wanted)
    for number, line in iter_lines(path):
        if number in wanted:
            found[number] = clip(line)
        if number >= last:
            break
    return found


def clip(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = text.rstrip("\r\n")
    return text if len(text) <= RAW_TEXT_LIMIT else text[:RAW_TEXT_LIMIT] + "…"


# --- unparseable input ------------------------------------------------------------------------


@dataclass
class Bad:
    number: int  # line (or item/row) number, 1-based
    reason: str
    raw: str
    hint: Any = None  # parser-specific: which batch the line most likely belongs to


class BadLines:
    """Collects unparseable lines; more than ``max_bad_lines`` of them fails the whole file."""

    def __init__(self, ctx: Context, unit: str = "line") -> None:
        self.ctx = ctx
        self.unit = unit
        self.items: list[Bad] = []

    def add(self, number: int, reason: str, raw: bytes | str, hint: Any = None) -> None:
        self.items.append(Bad(number, reason, clip(raw), hint))
        if len(self.items) > self.ctx.max_bad_lines:
            first = min(self.items, key=lambda bad: bad.number)
            raise self.ctx.error(
                f"unparseable {self.unit} {first.number}: {first.reason} "
                f"(more than max_bad_lines={self.ctx.max_bad_lines} unparseable {self.unit}s)"
            )

    def __len__(self) -> int:
        return len(self.items)

    def rejects(self, items: list[Bad]) -> pa.Table:
        return rejects_table(
            self.ctx.source,
            [(f"unparseable {self.unit} {bad.number}: {bad.reason}", bad.raw) for bad in sorted(items, key=_number)],
        )


def _number(bad: Bad) -> int:
    return bad.number


def attach_rejects(batches: list[TickBatch], bad: BadLines, home: Any) -> list[TickBatch]:
    """Put each reject into the batch ``home(hint, batches)`` picks (an index), else the first."""
    if not bad.items:
        return batches
    if not batches:
        first = min(bad.items, key=_number)
        raise bad.ctx.error(f"unparseable {bad.unit} {first.number}: {first.reason} (and no parseable data)")
    groups: dict[int, list[Bad]] = {}
    for item in bad.items:
        index = home(item.hint, batches)
        groups.setdefault(0 if index is None else index, []).append(item)
    out = list(batches)
    for index, items in groups.items():
        batch = out[index]
        out[index] = TickBatch(batch.exchange, batch.symbol, batch.kind, batch.rows, bad.rejects(items))
    return out


def home_by_symbol(hint: Any, batches: list[TickBatch]) -> int | None:
    """Hint ``(symbol, kind)`` with either part None: the best matching batch."""
    if not isinstance(hint, tuple):
        return None
    symbol, kind = hint
    for index, batch in enumerate(batches):
        if batch.symbol == symbol and batch.kind == kind:
            return index
    for index, batch in enumerate(batches):
        if batch.symbol == symbol:
            return index
    return None


# --- columns ----------------------------------------------------------------------------------


class Columns:
    """Bulk conversion of parsed value lists to arrays, with a per-value fallback that records
    which rows hold unusable values (``bad``: row index -> reason) instead of failing."""

    def __init__(self) -> None:
        self.bad: dict[int, str] = {}

    def floats(self, values: list[Any], name: str, empty_nan: bool = False) -> np.ndarray:
        for build in (lambda: pa.array(values, pa.string()).cast(pa.float64()), lambda: pa.array(values, pa.float64())):
            try:
                array = build()
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
                continue
            if array.null_count == 0:
                return array.to_numpy(zero_copy_only=False)
        out = np.empty(len(values), dtype=np.float64)
        for index, value in enumerate(values):
            if empty_nan and (value is None or value == ""):
                out[index] = np.nan
                continue
            try:
                if isinstance(value, bool) or value is None:
                    raise ValueError
                out[index] = float(value)
            except (TypeError, ValueError):
                out[index] = np.nan
                self.bad.setdefault(index, f"bad {name} {value!r}")
        return out

    def ints(self, values: list[Any], name: str, nullable: bool = False) -> pa.Array:
        for build in (lambda: pa.array(values, pa.int64()), lambda: pa.array(values, pa.string()).cast(pa.int64())):
            try:
                array = build()
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
                continue
            if nullable or array.null_count == 0:
                return array
        out: list[int | None] = []
        for index, value in enumerate(values):
            if value is None or value == "":
                if not nullable:
                    self.bad.setdefault(index, f"missing {name}")
                out.append(None if nullable else 0)
                continue
            try:
                if isinstance(value, (bool, float)):
                    raise ValueError
                number = int(value)
                if not -(2**63) <= number < 2**63:
                    raise ValueError
                out.append(number)
            except (TypeError, ValueError):
                self.bad.setdefault(index, f"bad {name} {value!r}")
                out.append(None if nullable else 0)
        return pa.array(out, pa.int64())

    def ms_to_ns(self, values: list[Any], name: str, nullable: bool = False) -> pa.Array:
        return self.scaled(values, name, NS_PER_MS, nullable)

    def scaled(self, values: list[Any], name: str, factor: int, nullable: bool = False) -> pa.Array:
        """Integer timestamps in a coarser unit to ns; values that would overflow int64 are bad."""
        array = self.ints(values, name, nullable)
        raw = array.fill_null(0).to_numpy()
        limit = np.iinfo(np.int64).max // factor
        for index in np.flatnonzero(np.abs(raw) > limit):
            self.bad.setdefault(int(index), f"{name} {int(raw[index])} out of range")
        scaled = np.where(np.abs(raw) > limit, 0, raw) * factor
        return pa.array(scaled, pa.int64(), mask=array.is_null().to_numpy(zero_copy_only=False) if array.null_count else None)

    def keep_mask(self, length: int) -> np.ndarray | None:
        if not self.bad:
            return None
        keep = np.ones(length, dtype=bool)
        keep[list(self.bad)] = False
        return keep


def table(kind: Kind, columns: dict[str, Any], keep: np.ndarray | None = None) -> pa.Table:
    """The kind's schema from column arrays (numpy or arrow), minus the rows ``keep`` rejects."""
    built = pa.table({name: values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values) for name, values in columns.items()})
    if keep is not None:
        built = built.filter(pa.array(keep))
    return conform(kind, built)


def to_base(qty: np.ndarray, price: np.ndarray, contract_usd: float | None) -> np.ndarray:
    """Quantities to base coin: ``None`` = already base; else contracts of ``contract_usd`` USD
    each (1.0 = amounts quoted in USD), i.e. qty * contract_usd / price."""
    if contract_usd is None:
        return qty
    with np.errstate(divide="ignore", invalid="ignore"):
        return qty * contract_usd / price


def side_codes(values: list[Any], buy: Any, sell: Any) -> np.ndarray:
    """+1 for ``buy``, -1 for ``sell``, 0 (unknown) for anything else."""
    lookup = {buy: 1, sell: -1}
    return np.fromiter((lookup.get(value, 0) for value in values), dtype=np.int8, count=len(values))


def stable_id(text: str) -> int:
    """A stable non-negative int64 for a non-numeric trade id (e.g. BitMEX UUIDs): the first 8
    bytes of blake2b(text), masked to 63 bits. Numeric ids are used as they are."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF


def trade_id(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit() and int(text) < 2**63:
            return int(text)
        if text:
            return stable_id(text)
    raise ValueError(f"bad trade id {value!r}")


# --- symbols ----------------------------------------------------------------------------------


def binance_symbol(market_id_or_unified: str, exchange: str) -> str:
    """A ccxt unified symbol from a Binance market id (``BTCUSDT``) or an already unified one."""
    if "/" in market_id_or_unified:
        return market_id_or_unified
    market = BINANCE_MARKETS.get(exchange)
    if market is None:
        raise SourceError(f"cannot tell the market of {market_id_or_unified!r} on exchange {exchange!r}")
    if "_" in market_id_or_unified:
        market = "coinm"
    return binance_unified(market_id_or_unified, market)


def check_override(ctx: Context, what: str, found: str, override: str | None) -> None:
    """Self-describing files: an override that contradicts the file is an error, not a relabel."""
    if override is not None and override != found:
        raise ctx.error(f"the file holds {what} {found!r} but {what}={override!r} was given")
