"""Quality rules: split parsed ticks into valid rows and quarantined rows with a reason.

One set of rules for every source. A row fails on the first rule it breaks; nothing valid is
dropped, and every rejected row is kept (as JSON) with its reason so it can be inspected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.data.schemas import EXEC_TYPE, QUARANTINE, SCHEMAS, Kind
from pipeline.data.sources.base import row_json

# Exchange timestamps outside this range are corrupt (2010-01-01 .. 2100-01-01, ns).
MIN_TS_NS = 1_262_304_000_000_000_000
MAX_TS_NS = 4_102_444_800_000_000_000
MARKET_EXEC_TYPE = "MARKET"


@dataclass(frozen=True)
class QualityResult:
    valid: pa.Table  # the kind's schema exactly
    quarantined: pa.Table  # QUARANTINE schema


def split_valid(kind: Kind, rows: pa.Table, source: str, backwards_tolerance_ns: int) -> QualityResult:
    codes, reasons = _reason_codes(kind, rows, backwards_tolerance_ns)
    bad = codes >= 0
    schema = SCHEMAS[kind]
    valid = rows.filter(pa.array(~bad)).select(schema.names).cast(schema)
    if not bad.any():
        return QualityResult(valid, QUARANTINE.empty_table())
    bad_rows = rows.filter(pa.array(bad))
    records = bad_rows.to_pylist()
    quarantined = pa.table(
        {
            "ts_ns": bad_rows.column("ts_ns"),
            "recv_ns": bad_rows.column("recv_ns"),
            "reason": [reasons[code] for code in codes[bad]],
            "source": [source] * len(records),
            "row": [row_json(record) for record in records],
        },
        schema=QUARANTINE,
    )
    return QualityResult(valid, quarantined)


def _reason_codes(kind: Kind, rows: pa.Table, tolerance_ns: int) -> tuple[np.ndarray, list[str]]:
    """Per row, the index of the first rule it breaks (-1: none), and the rules' reasons."""
    codes = np.full(rows.num_rows, -1, dtype=np.int32)
    reasons: list[str] = []
    for reason, mask in _value_checks(kind, rows):
        codes[(codes < 0) & mask] = len(reasons)
        reasons.append(reason)
    late = _backwards(_int_column(rows, "ts_ns"), codes < 0, tolerance_ns)
    codes[late] = len(reasons)
    reasons.append(f"timestamp goes backwards by more than {tolerance_ns / 1e6:g} ms")
    return codes, reasons


def _value_checks(kind: Kind, rows: pa.Table) -> list[tuple[str, np.ndarray]]:
    ts = rows.column("ts_ns")
    ts_values = _int_column(rows, "ts_ns")
    checks = [
        ("missing timestamp", np.asarray(pc.is_null(ts), dtype=bool)),
        ("timestamp out of range", (ts_values < MIN_TS_NS) | (ts_values > MAX_TS_NS)),
    ]
    if kind is Kind.TRADES:
        checks += [
            ("non-positive or NaN price", _not_positive(rows, "price")),
            ("non-positive or NaN quantity", _not_positive(rows, "qty")),
        ]
        if EXEC_TYPE in rows.column_names:
            exec_type = rows.column(EXEC_TYPE).fill_null(MARKET_EXEC_TYPE).to_numpy(zero_copy_only=False)
            for value in sorted(set(exec_type) - {MARKET_EXEC_TYPE}):
                checks.append(
                    (f"execution type {value} is not a market trade", exec_type == value)
                )
    elif kind is Kind.QUOTES:
        bid, ask = _float_column(rows, "bid_px"), _float_column(rows, "ask_px")
        checks += [
            ("non-positive or NaN bid/ask price", _not_positive(rows, "bid_px") | _not_positive(rows, "ask_px")),
            ("negative or NaN bid/ask size", _negative(rows, "bid_qty") | _negative(rows, "ask_qty")),
            ("crossed book (bid >= ask)", np.nan_to_num(bid) >= np.nan_to_num(ask, nan=np.inf)),
        ]
    elif kind is Kind.DEPTH:
        checks += [
            ("non-positive or NaN price", _not_positive(rows, "price")),
            ("negative or NaN quantity", _negative(rows, "qty")),
            ("side is neither bid (+1) nor ask (-1)", ~np.isin(_int_column(rows, "side"), [1, -1])),
        ]
    elif kind is Kind.FUNDING:
        mark = _float_column(rows, "mark_px", fill=1.0)
        rate = _float_column(rows, "funding_rate", fill=0.0)
        checks += [
            ("non-positive or NaN mark price", ~(mark > 0)),
            ("NaN or infinite funding rate", ~np.isfinite(rate)),
        ]
    return checks


def _backwards(ts: np.ndarray, ok: np.ndarray, tolerance_ns: int) -> np.ndarray:
    """Rows older than the latest valid timestamp before them by more than the tolerance.

    A late row never raises the running maximum, so the maximum over all valid rows so far is
    the same whether or not late rows are counted.
    """
    floor = np.iinfo(np.int64).min + tolerance_ns + 1
    running = np.maximum.accumulate(np.where(ok, ts, floor))
    latest_before = np.concatenate(([floor], running[:-1])) if len(ts) else running
    return ok & (ts < latest_before - tolerance_ns)


def _int_column(rows: pa.Table, name: str) -> np.ndarray:
    return rows.column(name).fill_null(0).to_numpy().astype(np.int64, copy=False)


def _float_column(rows: pa.Table, name: str, fill: float = np.nan) -> np.ndarray:
    column = rows.column(name).cast(pa.float64()).fill_null(fill)
    return column.to_numpy().astype(np.float64, copy=False)


def _not_positive(rows: pa.Table, name: str) -> np.ndarray:
    return ~(_float_column(rows, name) > 0)


def _negative(rows: pa.Table, name: str) -> np.ndarray:
    return ~(_float_column(rows, name) >= 0)
