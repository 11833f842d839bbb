"""Live outcomes in the store, and what they say about the model that traded them.

The daemon exports its journal's decisions and fills (serving/state/feedback.py) to

    <store>/live/kind=decisions|fills/symbol=<sym>/date=<YYYY-MM-DD>/part-<source>-<first>-<last>.parquet

``source`` names the journal the rows came from (ids restart in a new journal), ``first``/``last``
the journal row ids the part covers. Each row carries the registry version that was trading when
it was journaled (``model_name``, ``model_version``). A part is written under a temporary name and
renamed into place; rows are read back deduplicated on (source, id), so a part written twice by
an export that crashed before recording its watermark counts once.

``champion_feedback`` summarises the rows of one version for the next retrain: decisions and
fills, realised PnL and fees (average-cost accounting over every fill of the symbol, each fill's
realised PnL credited to the version that made it), and the live hit rate of the traded decisions'
P(up): the mid ``horizon_s`` after the decision against the mid at it, from the tick store's quotes
(else its trades). Reported on the retrain run and in its result: feedback, not training rows.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.symbols import path_segment

LIVE_DIR = "live"
KINDS = ("decisions", "fills")
HIT_HORIZON_S = 5.0  # as the daemon's live hit rate (serving.runtime.telemetry.HitRate)
PART = re.compile(r"^part-(?P<source>[0-9a-z]+)-(?P<first>\d+)-(?P<last>\d+)\.parquet$")

_MODEL = [pa.field("model_name", pa.string()), pa.field("model_version", pa.int64())]
SCHEMAS = {
    "decisions": pa.schema([
        pa.field("source", pa.string(), nullable=False), pa.field("id", pa.int64(), nullable=False),
        pa.field("ts_ns", pa.int64(), nullable=False), pa.field("symbol", pa.string(), nullable=False),
        pa.field("event", pa.string()), pa.field("p_up", pa.float64()), pa.field("predicted_move", pa.float64()),
        pa.field("model_ok", pa.bool_()), pa.field("regime", pa.string()), pa.field("strategy", pa.string()),
        pa.field("leverage", pa.float64()), pa.field("kill_state", pa.string()), pa.field("orders", pa.int32()),
        pa.field("cancels", pa.int32()), pa.field("vetoes", pa.int32()), *_MODEL,
        pa.field("record", pa.string()),  # the journal's JSON of DecisionRecord.to_dict()
    ]),
    "fills": pa.schema([
        pa.field("source", pa.string(), nullable=False), pa.field("id", pa.int64(), nullable=False),
        pa.field("ts_ns", pa.int64(), nullable=False), pa.field("symbol", pa.string(), nullable=False),
        pa.field("client_id", pa.string()), pa.field("fill_id", pa.string()), pa.field("price", pa.float64()),
        pa.field("qty", pa.float64()), pa.field("side", pa.int8()), pa.field("fee_usdt", pa.float64()), *_MODEL,
    ]),
}  # fmt: skip


def live_root(store_root: str | Path) -> Path:
    return Path(store_root) / LIVE_DIR


def partition_dir(store_root: str | Path, kind: str, symbol: str, date: str) -> Path:
    return live_root(store_root) / f"kind={kind}" / f"symbol={path_segment(symbol)}" / f"date={date}"


def part_name(source: str, first: int, last: int) -> str:
    return f"part-{source}-{first:012d}-{last:012d}.parquet"


def stored_ranges(directory: Path, source: str) -> list[tuple[int, int]]:
    """The (first, last) id ranges of ``source``'s parts in one partition directory."""
    out = []
    for path in directory.glob("part-*.parquet") if directory.is_dir() else ():
        match = PART.match(path.name)
        if match and match["source"] == source:
            out.append((int(match["first"]), int(match["last"])))
    return out


def read_live(store_root: str | Path, kind: str, symbol: str) -> pd.DataFrame:
    """Every exported row of ``kind`` for ``symbol``, deduplicated on (source, id), in time order."""
    if kind not in SCHEMAS:
        raise ValueError(f"unknown live kind {kind!r} (known: {', '.join(KINDS)})")
    base = live_root(store_root) / f"kind={kind}" / f"symbol={path_segment(symbol)}"
    parts = sorted(base.glob("date=*/part-*.parquet")) if base.is_dir() else []
    if not parts:
        return SCHEMAS[kind].empty_table().to_pandas()
    frame = pa.concat_tables(pq.read_table(p, schema=SCHEMAS[kind]) for p in parts).to_pandas()
    frame = frame.drop_duplicates(["source", "id"])
    return frame.sort_values(["ts_ns", "source", "id"], kind="stable").reset_index(drop=True)


# ---- what the rows say --------------------------------------------------------------------------


def realised_pnl(side: np.ndarray, qty: np.ndarray, price: np.ndarray) -> np.ndarray:
    """Each fill's realised PnL (quote currency, before fees) on an average-cost position that starts
    flat; fills in time order, ``side`` +1 buy / -1 sell, ``qty`` > 0 in base."""
    out = np.zeros(len(qty))
    position, entry = 0.0, 0.0
    for i, (s, q, p) in enumerate(zip(side.tolist(), qty.tolist(), price.tolist())):
        if position == 0.0 or (position > 0) == (s > 0):  # opening or adding: average the entry
            entry = (abs(position) * entry + q * p) / (abs(position) + q)
            position += s * q
            continue
        closed = min(q, abs(position))
        out[i] = closed * (p - entry) * math.copysign(1.0, position)
        position += s * q
        if abs(position) < 1e-12:
            position = 0.0
        elif (position > 0) == (s > 0):  # flipped through flat: the rest opened at this price
            entry = p
    return out


def judge(ts_ns: np.ndarray, p_up: np.ndarray, mid_ts: np.ndarray, mid: np.ndarray,
          horizon_ns: int) -> tuple[int, int, int]:  # fmt: skip
    """(hits, misses, flats) of directional P(up)s: the mid ``horizon_ns`` later against the mid at
    the decision (the last known at or before each time). A decision the mids do not reach past
    its horizon, or with P(up) 0.5 or NaN, is not judged."""
    keep = np.isfinite(p_up) & (p_up != 0.5)
    ts_ns, p_up = ts_ns[keep], p_up[keep]
    if not len(mid_ts) or not len(ts_ns):
        return 0, 0, 0
    at = np.searchsorted(mid_ts, ts_ns, side="right") - 1
    after = np.searchsorted(mid_ts, ts_ns + horizon_ns, side="right") - 1
    judged = (at >= 0) & (ts_ns + horizon_ns <= mid_ts[-1])
    move = (mid[after[judged]] - mid[at[judged]]) * np.where(p_up[judged] > 0.5, 1.0, -1.0)
    return int((move > 0).sum()), int((move < 0).sum()), int((move == 0).sum())


def mids(store_root: str | Path, symbol: str, start_ns: int, end_ns: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(ts_ns, mid, source) of the symbol in [start_ns, end_ns) from the tick store: quotes' mids,
    else trade prices; empty arrays and "none" when the store has neither."""
    from pipeline.data.schemas import Kind
    from pipeline.data.store import TickStore

    store = TickStore(store_root)
    partitions = store.partitions()
    for kind in (Kind.QUOTES, Kind.TRADES):
        exchanges = sorted({p.exchange for p in partitions if p.symbol == symbol and p.kind == kind})
        for exchange in exchanges:
            table = store.read(exchange, symbol, kind, start_ns, end_ns)
            if table.num_rows:
                ts = table["ts_ns"].to_numpy()
                if kind == Kind.QUOTES:
                    return ts, 0.5 * (table["bid_px"].to_numpy() + table["ask_px"].to_numpy()), "quotes"
                return ts, table["price"].to_numpy(), "trades"
    return np.empty(0, np.int64), np.empty(0), "none"


def champion_feedback(store_root: str | Path, symbol: str, version: int | None, name: str | None = None,
                      horizon_s: float = HIT_HORIZON_S) -> dict[str, Any]:  # fmt: skip
    """What the live rows say about ``version`` (the serving champion): ``metrics`` (numbers),
    ``params`` (labels, time range) and ``notes`` (what could not be measured, and why)."""
    params: dict[str, Any] = {"champion_version": version, "champion": name, "hit_horizon_s": horizon_s}
    notes: list[str] = []
    if version is None:
        return {"metrics": {}, "params": params, "notes": ["no serving champion: no live feedback"]}
    decisions = read_live(store_root, "decisions", symbol)
    fills = read_live(store_root, "fills", symbol)
    pnl = realised_pnl(fills["side"].to_numpy(), fills["qty"].to_numpy(), fills["price"].to_numpy())
    mine_d = decisions[decisions["model_version"] == version]
    mine_f = (fills["model_version"] == version).to_numpy()
    realised, fees = float(pnl[mine_f].sum()), float(fills["fee_usdt"].to_numpy()[mine_f].sum())
    metrics: dict[str, Any] = {
        "decisions": len(mine_d),
        "decisions_with_orders": int((mine_d["orders"] > 0).sum()),
        "fills": int(mine_f.sum()),
        "volume_usdt": float((fills["qty"] * fills["price"]).to_numpy()[mine_f].sum()),
        "realised_pnl_usdt": realised,
        "fees_usdt": fees,
        "net_pnl_usdt": realised - fees,
    }
    if len(mine_d) == 0 and not mine_f.any():
        notes.append(f"no live decisions or fills of v{version} in the store yet")
    traded = mine_d[(mine_d["orders"] > 0) & mine_d["model_ok"].fillna(False).astype(bool)]
    horizon_ns = int(horizon_s * 1e9)
    mid_source = "none"
    if len(traded):
        ts = traded["ts_ns"].to_numpy()
        start, end = int(ts.min()) - 60 * 10**9, int(ts.max()) + horizon_ns + 60 * 10**9
        mid_ts, mid, mid_source = mids(store_root, symbol, start, end)
        hits, misses, flats = judge(ts, traded["p_up"].to_numpy(), mid_ts, mid, horizon_ns)
        metrics |= {"hits": hits, "misses": misses, "flats": flats,
                    "hit_rate": hits / (hits + misses) if hits + misses else math.nan}
        if hits + misses + flats == 0:
            notes.append(f"no {symbol} ticks in the store {horizon_s:g} s past the traded decisions: hit rate unknown")
    else:
        metrics["hit_rate"] = math.nan
        notes.append("no traded decisions with a model probability: hit rate unknown")
    if len(mine_d) or mine_f.any():
        times = np.concatenate([mine_d["ts_ns"].to_numpy(), fills["ts_ns"].to_numpy()[mine_f]])
        params |= {"first_ns": int(times.min()), "last_ns": int(times.max())}
    params["mid_source"] = mid_source
    return {"metrics": metrics, "params": params, "notes": notes}
