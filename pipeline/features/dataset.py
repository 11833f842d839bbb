"""Labelled feature rows for one symbol and day, read from the tick store and written to the feature store.

A day is computed with look-back before its start, just long enough for every feature's declared
warm-up (at most ``LOOKBACK_DAYS``), so indicators do not restart at midnight; and with look-ahead
past its end, up to the label horizon, so the day's last rows get complete labels. Rows are sampled
inside the day only (every ``stride``-th quote update or event, counted from the day's first), and
kept where every feature is warm and the label's horizon was observed.

Depth: the depth features are candidates only where every planned day has depth rows in the tick
store (``days_have_depth``): elsewhere they would never warm and no row would be kept, so they are
left out of the candidates and the selection never sees them. Depth updates are events of the
stream but not rows (rows are quotes or trades) nor steps of an event-counted label horizon. The
L2 book needs a snapshot: a day's depth is read from the latest snapshot at or before the day's
start when there is none in its look-back (a capture with one snapshot at its start).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import AppConfig, LabelConfig, SamplingConfig
from pipeline.data.schemas import Kind
from pipeline.data.store import NS_PER_DAY, Partition, TickStore
from pipeline.errors import AutoscalpError
from pipeline.features.catalog import catalog, compile_program, resolve
from pipeline.features.core import KIND_DEPTH, KIND_QUOTE
from pipeline.features.engine import DEPTH, EVENTS, PROGRESS, event_progress, extract
from pipeline.features.events import EventArrays, merge_events
from pipeline.features.families import Warmup
from pipeline.features.selection import (
    Selection, eligible_candidates, load_selection, save_selection, select, selection_id,
)
from pipeline.features.store import DayKey, FeatureStore, definitions_version, fingerprint
from pipeline.labels import triple_barrier

log = logging.getLogger(__name__)

LOOKBACK_DAYS = 1
TICK_KINDS = (Kind.TRADES, Kind.QUOTES)


class EmptyDatasetError(AutoscalpError):
    """No row has every feature warm and a complete label."""


@dataclass(frozen=True)
class PartitionRecord:
    exchange: str
    symbol: str
    date: str
    fingerprint: str
    rows: int  # 0 when the day has no usable row (see ``skipped``)
    reused: bool  # found in the store: nothing was extracted
    label_counts: dict[str, int]  # {"-1": .., "0": .., "1": ..}
    skipped: str | None = None  # why the day has no rows

    @property
    def key(self) -> DayKey:
        return DayKey(self.exchange, self.symbol, self.date)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PartitionRecord:
        return cls(**data)


def candidate_names(
    config: AppConfig, names: list[str] | tuple[str, ...] | None = None, depth: bool = True
) -> list[str]:
    """The features to extract: those given, else every candidate fitting the warm-up budget;
    without ``depth`` (the data has no L2 book), no depth feature."""
    if names:
        compile_program(names)  # unknown names fail here, with the name
        if not depth and (wanted := [n for n in names if catalog()[n].family.is_depth]):
            raise AutoscalpError(f"{wanted[0]!r}: depth features need depth rows (an L2 book) in the tick store, "
                                 "and some day to build has none")
        return list(names)
    return eligible_candidates(config.features.warmup_budget, depth)


def uses_depth(names: list[str] | tuple[str, ...]) -> bool:
    return any(spec.family.is_depth for spec in resolve(names))


def plan_days(store: TickStore, symbols: list[str] | tuple[str, ...] | None = None) -> list[DayKey]:
    """Every (exchange, symbol, day) of the tick store holding both trades and quotes."""
    kinds: dict[DayKey, set[Kind]] = {}
    for p in store.partitions():
        if p.kind in TICK_KINDS and (not symbols or p.symbol in symbols):
            kinds.setdefault(DayKey(p.exchange, p.symbol, p.date), set()).add(p.kind)
    days = sorted(key for key, found in kinds.items() if found == set(TICK_KINDS))
    if not days:
        wanted = f" for {', '.join(symbols)}" if symbols else ""
        raise AutoscalpError(f"the tick store has no day with both trades and quotes{wanted}; run `autoscalp ingest`")
    return days


def days_have_depth(store: TickStore, days: list[DayKey]) -> bool:
    """Whether the store holds depth rows for every one of ``days`` (and there is a day)."""
    with_depth = {DayKey(p.exchange, p.symbol, p.date) for p in store.partitions() if p.kind == Kind.DEPTH}
    return bool(days) and all(day in with_depth for day in days)


# ---- the window a day is computed on ---------------------------------------------------------


@dataclass(frozen=True)
class DayWindow:
    day_start_ns: int
    day_end_ns: int
    read_start_ns: int  # look-back
    read_end_ns: int  # look-ahead
    later_data: bool  # the store holds ticks from the window's end on: the look-ahead is complete

    def dates(self) -> list[str]:
        return dates_between(self.read_start_ns, self.read_end_ns)


def dates_between(start_ns: int, end_ns: int) -> list[str]:
    """The UTC dates of [start_ns, end_ns)."""
    first, last = start_ns // NS_PER_DAY, (end_ns - 1) // NS_PER_DAY
    return [str(np.datetime64(day, "D")) for day in range(first, last + 1)]


def day_window(store: TickStore, key: DayKey, labels: LabelConfig) -> DayWindow:
    start = int(np.datetime64(key.date, "ns").astype(np.int64))
    end = start + NS_PER_DAY
    if labels.horizon_seconds is not None:
        ahead = int(round(labels.horizon_seconds * 1e9))
    else:
        ahead = NS_PER_DAY  # a count horizon: the next day holds (far) more events than any horizon
    read_end = end + ahead
    later = has_ticks_from(store, key, read_end)
    return DayWindow(start, end, start - LOOKBACK_DAYS * NS_PER_DAY, read_end, later)


def has_ticks_from(store: TickStore, key: DayKey, ts_ns: int) -> bool:
    """Whether the store holds a trade or quote of the symbol at or after ``ts_ns``."""
    date = str(np.datetime64(ts_ns // NS_PER_DAY, "D"))
    for p in store.partitions():
        if (p.exchange, p.symbol) != (key.exchange, key.symbol) or p.kind not in TICK_KINDS or p.date < date:
            continue
        if p.date > date:
            return True
        # Only the timestamps of the one day the time falls in are read.
        directory = store.ticks_dir / p.relative_dir()
        if any(pc.max(pq.read_table(f, columns=["ts_ns"])["ts_ns"]).as_py() >= ts_ns
               for f in directory.glob("part-*.parquet")):
            return True
    return False


def depth_start_ns(store: TickStore, key: DayKey, window: DayWindow) -> int:
    """Where a day's depth is read from: the look-back's start, or the latest snapshot before the
    day's start if the look-back holds none (the book needs one; only snapshot flags are read)."""
    last_date = str(np.datetime64(window.day_start_ns // NS_PER_DAY, "D"))
    dates = sorted((p.date for p in store.partitions() if (p.exchange, p.symbol, p.kind) == (
        key.exchange, key.symbol, Kind.DEPTH) and p.date <= last_date), reverse=True)
    for date in dates:
        directory = store.ticks_dir / Partition(key.exchange, key.symbol, Kind.DEPTH, date).relative_dir()
        found = [pq.read_table(f, columns=["ts_ns", "is_snapshot"]) for f in sorted(directory.glob("part-*.parquet"))]
        ts = [t["ts_ns"].filter(t["is_snapshot"]).to_numpy() for t in found]
        ts = np.concatenate(ts) if ts else np.empty(0, np.int64)
        ts = ts[ts <= window.day_start_ns]
        if ts.size:
            return int(min(ts.max(), window.read_start_ns))
    return window.read_start_ns


def tick_files(
    store: TickStore, key: DayKey, window: DayWindow, depth_from_ns: int | None = None
) -> list[tuple[str, int]]:
    """The tick files a day reads, by name and size (names are content hashes, see the tick store);
    with ``depth_from_ns``, its depth files too."""
    files = []
    reads = [(date, kind) for date in window.dates() for kind in TICK_KINDS]
    if depth_from_ns is not None:
        reads += [(date, Kind.DEPTH) for date in dates_between(depth_from_ns, window.read_end_ns)]
    for date, kind in reads:
        directory = store.ticks_dir / Partition(key.exchange, key.symbol, kind, date).relative_dir()
        for part in sorted(directory.glob("part-*.parquet")):
            files.append((f"{date}/{kind.value}/{part.name}", part.stat().st_size))
    return files


def day_fingerprint(
    store: TickStore, key: DayKey, names: list[str], labels: LabelConfig, sampling: SamplingConfig
) -> str:
    window = day_window(store, key, labels)
    depth_from = depth_start_ns(store, key, window) if uses_depth(names) else None
    return fingerprint({
        "key": asdict(key),
        "window": asdict(window),
        "ticks": tick_files(store, key, window, depth_from),
        "definitions": definitions_version(),
        "labels": labels.model_dump(),
        "sampling": sampling.model_dump(),
        "features": list(names),
    })


# ---- the rows: pure functions of an event stream -----------------------------------------------


def lookback_start(events: EventArrays, day_lo: int, need: Warmup) -> int:
    """The latest index before ``day_lo`` from which a program declaring ``need`` is warm at day_lo.

    Counted as the engine counts (``engine.event_progress``: valid quotes, trades, events, mid
    moves, seconds, depth updates), with the inputs warm ``after_events`` events and
    ``after_depth`` depth updates before day_lo, so that every transform has had its own warm-up
    too. (Depth summaries are of the whole book, replayed before the stream is cut: a restart
    needs only the depth updates its features declare.)"""
    if day_lo == 0:
        return 0
    progress = event_progress(events.slice(0, day_lo + 1))
    target = day_lo
    for column, after in ((EVENTS, need.after_events), (DEPTH, need.after_depth)):
        counted = progress[:, column]
        target = min(target, int(np.searchsorted(counted, counted[day_lo] - after, side="right")) - 1)
    if target < 0:
        return 0
    # A restart's first quote sets the book without moving the mid: one move more to be sure.
    counts = {"quotes": need.quotes, "trades": need.trades, "events": need.events,
              "moves": need.moves + 1 if need.moves else 0, "depth": need.depth}
    starts = [target]
    for name, count in counts.items():
        if count:
            column = progress[: target + 1, PROGRESS.index(name)]
            starts.append(int(np.searchsorted(column, column[target] - count, side="right")))
    if need.seconds:
        horizon = events.ts_ns[target] - int(np.ceil(need.seconds * 1e9))
        starts.append(max(int(np.searchsorted(events.ts_ns[: target + 1], horizon, side="right")) - 1, 0))
    return min(starts)


def sample_rows(events: EventArrays, lo: int, hi: int, sampling: SamplingConfig) -> np.ndarray:
    """Event indices of the rows in [lo, hi): every ``stride``-th quote update or event (quote or
    trade: a depth update is not a row, so sampling is the same with or without depth)."""
    candidates = np.arange(lo, hi)
    if sampling.every == "quote":
        candidates = candidates[events.kind[lo:hi] == KIND_QUOTE]
    else:
        candidates = candidates[events.kind[lo:hi] != KIND_DEPTH]
    return candidates[:: sampling.stride].astype(np.int64)


def labelled_rows(
    events: EventArrays, lo: int, hi: int, names: list[str], labels: LabelConfig, sampling: SamplingConfig,
    known_until_ns: int | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Features and labels at the sampled events of [lo, hi), warm and complete rows only.

    Events before ``lo`` are history (look-back), events from ``hi`` on are only the labels' future.
    Returns the rows and the counts of sampled, warm and complete rows (for error messages)."""
    program = compile_program(names)
    start = lookback_start(events, lo, program.max_warmup())
    emit = sample_rows(events, lo, hi, sampling)
    frame = extract(events.slice(start, hi), names, emit - start)
    # Labels on quotes and trades only: an event-counted horizon does not count depth updates.
    future, kept = events.slice(start).ticks_only()
    labelled = triple_barrier(future, np.searchsorted(kept, emit - start), labels, known_until_ns)
    frame["label"] = labelled.label
    frame["fwd_return"] = labelled.fwd_return
    frame["exit_ts_ns"] = labelled.exit_ts_ns
    frame = frame[[c for c in frame.columns if c != "warm"] + ["warm"]]
    keep = frame["warm"].to_numpy() & labelled.complete
    counts = {"sampled": len(emit), "warm": int(frame["warm"].sum()), "complete": int(labelled.complete.sum())}
    return frame[keep].reset_index(drop=True), counts


def read_events(store: TickStore, key: DayKey, window: DayWindow, depth: bool = False) -> EventArrays:
    """The window's events; with ``depth``, its depth updates too, the book replayed from
    ``depth_start_ns`` (the events before the window are then cut off)."""
    trades = store.read(key.exchange, key.symbol, Kind.TRADES, window.read_start_ns, window.read_end_ns)
    quotes = store.read(key.exchange, key.symbol, Kind.QUOTES, window.read_start_ns, window.read_end_ns)
    if not depth:
        return merge_events(trades, quotes)
    depth_rows = store.read(key.exchange, key.symbol, Kind.DEPTH, depth_start_ns(store, key, window),
                            window.read_end_ns)
    events = merge_events(trades, quotes, depth_rows)
    return events.slice(int(np.searchsorted(events.ts_ns, window.read_start_ns)))


def day_rows(
    store: TickStore, key: DayKey, names: list[str], labels: LabelConfig, sampling: SamplingConfig
) -> pd.DataFrame:
    """The labelled feature rows of one day; ``EmptyDatasetError`` when no row is usable."""
    window = day_window(store, key, labels)
    events = read_events(store, key, window, uses_depth(names))
    lo, hi = np.searchsorted(events.ts_ns, [window.day_start_ns, window.day_end_ns])
    known_until = window.read_end_ns if window.later_data else None
    rows, counts = labelled_rows(events, int(lo), int(hi), names, labels, sampling, known_until)
    if rows.empty:
        raise EmptyDatasetError(
            f"{key.symbol} {key.date}: no usable row ({counts['sampled']} sampled, {counts['warm']} with every "
            f"feature warm, {counts['complete']} with a complete label horizon): the day's data is shorter than "
            "the features' warm-up or the label horizon; lower features.warmup_budget or extract fewer features"
        )
    return rows


# ---- one day into the feature store ---------------------------------------------------------


def build_day(
    ticks: TickStore, features: FeatureStore, key: DayKey, names: list[str], config: AppConfig
) -> PartitionRecord:
    """Extract and store a day's labelled features, unless the store already holds them."""
    labels, sampling = config.labels, config.features.sampling
    fp = day_fingerprint(ticks, key, names, labels, sampling)
    if features.has(key, fp):
        meta = features.metadata(key, fp)
        log.info("%s %s: reused %s (%d rows)", key.symbol, key.date, fp, meta["rows"])
        return PartitionRecord(**asdict(key), fingerprint=fp, rows=meta["rows"], reused=True,
                               label_counts=meta["label_counts"])
    try:
        rows = day_rows(ticks, key, names, labels, sampling)
    except EmptyDatasetError as exc:
        log.warning("%s", exc)
        return PartitionRecord(**asdict(key), fingerprint=fp, rows=0, reused=False, label_counts={},
                               skipped=str(exc))
    counts = rows["label"].value_counts()
    label_counts = {str(c): int(counts.get(c, 0)) for c in (-1, 0, 1)}
    metadata = {
        "fingerprint": fp,
        "key": asdict(key),
        "rows": len(rows),
        "label_counts": label_counts,
        "labels": labels.model_dump(),
        "costs": {
            "fee_bps_per_side": labels.fee_bps_per_side,
            "round_trip_fee_bps": 2 * labels.fee_bps_per_side,
            "half_spread_at_entry": labels.include_half_spread,
        },
        "horizon": {"events": labels.horizon_events, "seconds": labels.horizon_seconds},
        "sampling": sampling.model_dump(),
        "features": list(names),
        "definitions_version": definitions_version(),
    }
    features.write(key, fp, rows, metadata)
    log.info("%s %s: wrote %s (%d rows, labels %s)", key.symbol, key.date, fp, len(rows), label_counts)
    return PartitionRecord(**asdict(key), fingerprint=fp, rows=len(rows), reused=False, label_counts=label_counts)


def dataset_fingerprint(records: list[PartitionRecord]) -> str:
    return fingerprint({"partitions": sorted(r.fingerprint for r in records if r.rows)})


def read_dataset(
    features: FeatureStore, records: list[PartitionRecord], columns: list[str] | None = None
) -> pd.DataFrame:
    """The stored rows of the built partitions; ``EmptyDatasetError`` when none has rows."""
    usable = [(r.key, r.fingerprint) for r in records if r.rows]
    if not usable:
        reasons = "; ".join(r.skipped or "" for r in records) or "no partition"
        raise EmptyDatasetError(f"no feature rows to select on: {reasons}")
    return features.read_many(usable, columns)


def select_features(
    features: FeatureStore, records: list[PartitionRecord], names: list[str], config: AppConfig
) -> Selection:
    """Select on the built partitions and record the selection; a selection of the same rows,
    candidates and config is read back instead of recomputed."""
    dataset = dataset_fingerprint(records)
    settings = config.features
    selection_key = selection_id(dataset, names, settings.selection, settings.warmup_budget)
    saved = features.root / "selections" / f"{selection_key}.json"
    if saved.is_file():
        selection = load_selection(saved)
    else:
        columns = ["ts_ns", "label", "exit_ts_ns", *names]
        selection = select(read_dataset(features, records, columns), names, settings.selection,
                           settings.warmup_budget, dataset)
    save_selection(selection, features.root)
    return selection
