"""The journal's decisions and fills, exported to the store for the next retrain
(pipeline/monitoring/feedback.py has the layout and reads them back).

Which model made a row: at start and at each swap the trading thread journals a ``model_trading``
note (``note_model``) holding the version and the highest decision and fill ids so far, in one
transaction with nothing between; every later row belongs to that version until the next note.
Exact whatever the event times (a replay may go back in time after a restart).

``export`` runs off the trading thread, on its own read connection (WAL: it never blocks the
writer), and is idempotent:

- it reads the rows above the watermark (``live/_watermarks/<source>.json``: the highest decision
  and fill ids exported) in one read transaction, in batches;
- it writes each (kind, symbol, date) group as one part, temp file + fsync + rename, named by the
  id range it covers; rows that a part of the same source already covers (written by an export that
  crashed after its parts and before its watermark) are left out;
- then it moves the watermark (temp + rename). A crash anywhere loses nothing and duplicates
  nothing: the next export starts from the last watermark and skips what is already there.

``source`` is the journal's identity: its file name and its first restart note's time, hashed, so a
journal deleted and started again (ids from 1) is a new source, not rows below the watermark.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.store import NS_PER_DAY
from pipeline.monitoring.feedback import SCHEMAS, live_root, part_name, partition_dir, stored_ranges
from serving.state.db import BUSY_TIMEOUT_MS, transaction

MODEL_NOTE = "model_trading"
BATCH_ROWS = 50_000  # journal rows read per query: bounded memory on a long backlog


def note_model(journal: Any, version: Any, ts_ns: int) -> None:
    """On the journal's writer (the trading thread), when a model starts trading: from the next
    decision and fill on, they are ``version``'s (a ``VersionInfo``; None: no model)."""
    with transaction(journal._db) as db:  # the maxima and the note in one transaction
        after_decision = db.execute("SELECT COALESCE(MAX(id), 0) FROM decisions").fetchone()[0]
        after_fill = db.execute("SELECT COALESCE(MAX(id), 0) FROM fills").fetchone()[0]
        text = json.dumps({"name": getattr(version, "name", None), "version": getattr(version, "version", None),
                           "after_decision": after_decision, "after_fill": after_fill})  # fmt: skip
        db.execute("INSERT INTO events (ts_ns, kind, text) VALUES (?, ?, ?)", (ts_ns, MODEL_NOTE, text))


class FeedbackExporter:
    """Exports one journal's new decisions and fills to ``store_root/live`` (see the module doc)."""

    def __init__(self, journal_path: str | Path, store_root: str | Path) -> None:
        self.journal_path = Path(journal_path)
        self.store_root = Path(store_root)
        self._db: sqlite3.Connection | None = None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def export(self) -> dict[str, int]:
        """Rows exported now per kind (0 when nothing is new, or no journal exists yet)."""
        db = self._connect()
        if db is None:
            return {kind: 0 for kind in SCHEMAS}
        source = self._source(db)
        if source is None:  # the daemon has not started a run in it yet
            return {kind: 0 for kind in SCHEMAS}
        root = live_root(self.store_root)
        root.mkdir(parents=True, exist_ok=True)
        exported = {kind: 0 for kind in SCHEMAS}
        with _locked(root / ".lock"):  # one exporter per store at a time (the daemon, the CLI)
            marks = self._watermarks(source)
            while True:
                batch = self._read(db, marks)
                if not any(len(rows) for rows in batch.values()):
                    break
                for kind, rows in batch.items():
                    if rows:
                        exported[kind] += self._write(kind, source, rows)
                        marks[kind] = rows[-1]["id"]
                self._save_watermarks(source, marks)
        return exported

    # ---- reading the journal ------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection | None:
        if self._db is None:
            if not self.journal_path.is_file():
                return None
            self._db = sqlite3.connect(self.journal_path, isolation_level=None, check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return self._db

    def _source(self, db: sqlite3.Connection) -> str | None:
        row = db.execute("SELECT ts_ns FROM events WHERE kind = 'restart' ORDER BY id LIMIT 1").fetchone()
        if row is None:
            return None
        return hashlib.blake2b(f"{self.journal_path.name}|{row[0]}".encode(), digest_size=6).hexdigest()

    def _read(self, db: sqlite3.Connection, marks: dict[str, int]) -> dict[str, list[dict]]:
        db.execute("BEGIN")  # one snapshot: the model notes cover every row read with them
        try:
            notes = db.execute("SELECT text FROM events WHERE kind = ? ORDER BY id", (MODEL_NOTE,)).fetchall()
            decisions = db.execute("SELECT id, record FROM decisions WHERE id > ? ORDER BY id LIMIT ?",
                                   (marks["decisions"], BATCH_ROWS)).fetchall()  # fmt: skip
            fills = db.execute("SELECT id, ts_ns, symbol, client_id, fill_id, price, qty, side, fee_usdt FROM fills "
                               "WHERE id > ? ORDER BY id LIMIT ?", (marks["fills"], BATCH_ROWS)).fetchall()  # fmt: skip
        finally:
            db.execute("COMMIT")
        segments = [json.loads(text) for (text,) in notes]
        return {"decisions": [_decision_row(i, record, _model_of(segments, "after_decision", i))
                              for i, record in decisions],
                "fills": [_fill_row(row, _model_of(segments, "after_fill", row[0])) for row in fills]}  # fmt: skip

    # ---- the store ------------------------------------------------------------------------------

    def _write(self, kind: str, source: str, rows: list[dict]) -> int:
        table = pa.Table.from_pylist([{"source": source, **row} for row in rows], schema=SCHEMAS[kind])
        days = (table["ts_ns"].to_numpy() // NS_PER_DAY).astype(np.int64)
        symbols = np.array(table["symbol"].to_pylist(), dtype=object)
        written = 0
        for symbol in sorted(set(symbols.tolist())):
            for day in np.unique(days[symbols == symbol]):
                directory = partition_dir(self.store_root, kind, symbol, str(np.datetime64(int(day), "D")))
                keep = (symbols == symbol) & (days == day)
                ids = table["id"].to_numpy()
                for lo, hi in stored_ranges(directory, source):  # written before a crash took the watermark
                    keep &= (ids < lo) | (ids > hi)
                if not keep.any():
                    continue
                part = table.filter(pa.array(keep))
                ids = part["id"].to_numpy()
                _write_atomic(directory / part_name(source, int(ids.min()), int(ids.max())), part)
                written += part.num_rows
        return written

    def _watermark_path(self, source: str) -> Path:
        return live_root(self.store_root) / "_watermarks" / f"{source}.json"

    def _watermarks(self, source: str) -> dict[str, int]:
        path = self._watermark_path(source)
        marks = json.loads(path.read_text()) if path.is_file() else {}
        return {kind: int(marks.get(kind, 0)) for kind in SCHEMAS}

    def _save_watermarks(self, source: str, marks: dict[str, int]) -> None:
        path = self._watermark_path(source)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temp.write_text(json.dumps({**marks, "journal": str(self.journal_path)}))
        os.replace(temp, path)


def _model_of(segments: list[dict], key: str, row_id: int) -> tuple[str | None, int | None]:
    """The version trading when row ``row_id`` was journaled: the last note before it."""
    found: dict = {}
    for segment in segments:  # a handful: one per start and swap
        if segment[key] < row_id:
            found = segment
    return found.get("name"), found.get("version")


def _decision_row(row_id: int, record: str, model: tuple[str | None, int | None]) -> dict:
    data = json.loads(record)
    m = data.get("model", {})
    return {"id": row_id, "ts_ns": data["ts_ns"], "symbol": data["symbol"], "event": data.get("event"),
            "p_up": m.get("p_up"), "predicted_move": m.get("predicted_move"), "model_ok": m.get("ok"),
            "regime": data.get("regime"), "strategy": data.get("strategy"), "leverage": data.get("leverage"),
            "kill_state": data.get("kill_switch", {}).get("state"), "orders": len(data.get("orders", ())),
            "cancels": len(data.get("cancels", ())), "vetoes": len(data.get("risk", {}).get("failed", ())),
            "model_name": model[0], "model_version": model[1], "record": record}  # fmt: skip


def _fill_row(row: tuple, model: tuple[str | None, int | None]) -> dict:
    row_id, ts_ns, symbol, client_id, fill_id, price, qty, side, fee = row
    return {"id": row_id, "ts_ns": ts_ns, "symbol": symbol, "client_id": client_id, "fill_id": fill_id,
            "price": price, "qty": qty, "side": side, "fee_usdt": fee, "model_name": model[0],
            "model_version": model[1]}  # fmt: skip


def _write_atomic(final: Path, table: pa.Table) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    pq.write_table(table, temp, compression="zstd")
    with open(temp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temp, final)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
