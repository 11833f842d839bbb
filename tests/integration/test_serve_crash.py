"""`autoscalp serve` killed with SIGKILL at random points while paper trading, and restarted on the same
home each time (issue 7): after each restart's reconciliation the journal and the venue agree, no
order is sent twice, no fill is lost or booked twice, and every open position has a stop.

The daemon is the real one, a subprocess (``python -m flows serve --feed synthetic --speed 0``); the
paper broker's SQLite file is "the exchange". It trades a registered champion: a logistic-only
ensemble fitted on random rows. Its P(up) means nothing; it is finite, so the engine is not held
in REDUCING for a model failure and the market maker quotes, fills and holds positions.

Each trial starts the daemon (which reconciles what the previous kill left), checks the two files
once it has re-armed and its champion has warmed up again, lets it trade 0.3-2 s and kills it; one trial in four then waits for the next
moment a position is open (they last ~0.1 s), so that restarts find positions to protect, and one in
four is killed a moment after start-up instead, inside reconciliation or the first sends.

The files are read read-only while the daemon is frozen (SIGSTOP). Some things hold at every
instant, a kill's included: the journal writes before the venue acts, so the venue never has an
order the journal lacks, and the journal never a fill the venue lacks; an order marked unsent never
reaches the venue. Others hold only between two of the daemon's calls (a fill the venue committed is
journaled a moment later; a new position's stop follows its fill): those are read again every 50 ms
until they hold, and fail when they do not within a few seconds.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .serve_support import SLUG, config_yaml, register_champion

REPO = Path(__file__).resolve().parents[2]
TRIALS = 20
SETTLE_S = 8.0  # how long a restarted daemon gets to agree with the venue and re-arm its stops
OPEN = ("intent", "sent", "working")
AT_VENUE = ("sent", "working", "filled", "cancelled", "rejected", "expired")  # the journal's states of sent orders
# Engine roles with short warm-ups: a restarted daemon trades again within half a second. Every kill
# here is a crash to the crash-loop back-off (serving/daemon/healing.py); waiting would only slow the
# trials down, so it is off (tests/unit/serving/daemon/test_healing.py tests it).
# The market maker quotes close to the touch, so that it fills often between the kills (each fill and
# position is something a kill can interrupt).
CONFIG = config_yaml({"http_port": 0, "model_poll_s": 3600, "healing": {"crash_backoff_s": 0}},
                     engine={"market_making": {"min_half_spread_bps": 0.5, "vol_spread_mult": 2.0}})
pytestmark = pytest.mark.slow


class Daemon:
    """``autoscalp serve`` in a subprocess; its output collected line by line."""

    def __init__(self, home: Path, config: Path) -> None:
        env = {**os.environ, "AUTOSCALP_HOME": str(home)}
        for key in ("AUTOSCALP_CONFIG", "MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
            env.pop(key, None)
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "flows", "serve", "--config", str(config), "--feed", "synthetic",
             "--speed", "0", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO,
        )  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in list(self.lines)):
            assert self.proc.poll() is None, f"the daemon exited ({self.proc.returncode}):\n{self.output()}"
            assert time.monotonic() < deadline, f"no {text!r} from the daemon in {timeout_s} s:\n{self.output()}"
            time.sleep(0.01)

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc.poll() is None, f"the daemon died before it was killed:\n{self.output()}"
        self.proc.send_signal(sig)
        code = self.proc.wait(60)
        self._reader.join(10)
        return code

    def output(self) -> str:
        return "\n".join(self.lines[-60:])


@dataclass
class Files:
    """The journal and the venue as committed, read with read-only connections."""

    journal_orders: dict[str, str]  # client id -> state
    journal_fills: list[str]  # fill ids, one per booked fill
    journal_positions: dict[str, tuple[float, float]]  # symbol -> (qty, entry), non-flat
    venue_orders: dict[str, tuple[str, list]]  # client id -> (state, Order as a list)
    venue_fills: list[str]
    venue_positions: dict[str, tuple[float, float]]
    runs: int  # restarts the journal has noted

    @classmethod
    def read(cls, home: Path) -> Files:
        journal = _read_only(home / "journal" / f"daemon-{SLUG}.sqlite")
        venue = _read_only(home / "journal" / f"paper-{SLUG}.sqlite")
        try:
            snapshot = json.loads(venue.execute("SELECT snapshot FROM account").fetchone()[0])
            positions = snapshot["portfolio"]["positions"]
            held = journal.execute("SELECT symbol, qty, entry_px FROM positions WHERE qty != 0")
            orders = venue.execute("SELECT client_id, state, order_json FROM orders")
            return cls(
                dict(journal.execute("SELECT client_id, state FROM orders")),
                [r[0] for r in journal.execute("SELECT fill_id FROM fills")],
                {s: (q, e) for s, q, e in held},
                {c: (s, json.loads(o)) for c, s, o in orders},
                [r[0] for r in venue.execute("SELECT fill_id FROM fills")],
                {s: (p["qty"], p["entry"]) for s, p in positions.items() if p["qty"] != 0.0},
                journal.execute("SELECT COUNT(*) FROM events WHERE kind = 'restart'").fetchone()[0],
            )  # fmt: skip
        finally:
            journal.close()
            venue.close()


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def always(files: Files, unsent_ever: set[str]) -> list[str]:
    """What holds at every instant, a kill's included: the journal writes before the venue acts."""
    problems = []
    ghosts = set(files.venue_orders) - set(files.journal_orders)
    if ghosts:
        problems.append(f"orders at the venue the journal never had: {sorted(ghosts)[:5]}")
    resent = unsent_ever & set(files.venue_orders)
    if resent:
        problems.append(f"orders marked unsent reached the venue later: {sorted(resent)[:5]}")
    invented = set(files.journal_fills) - set(files.venue_fills)
    if invented:
        problems.append(f"journal fills the venue never made: {sorted(invented)[:5]}")
    if len(set(files.journal_fills)) != len(files.journal_fills):
        problems.append("a fill booked twice in the journal")
    if len(set(files.venue_fills)) != len(files.venue_fills):
        problems.append("a fill id twice at the venue")
    return problems


def settled(files: Files, held_at_kill: dict | None = None) -> list[str]:
    """What holds once the daemon's calls have returned: reconciled, every fill booked, stops armed;
    and the run's own stop sent for each position the last kill left (``held_at_kill``)."""
    problems = []
    for symbol, (qty, _) in (held_at_kill or {}).items():
        side = -1 if qty > 0 else 1
        if not any(cid.startswith(f"as{files.runs}-") and o[1] == symbol and o[3] == "stop" and o[7] and o[2] == side
                   for cid, (_, o) in files.venue_orders.items()):  # fmt: skip
            problems.append(f"{symbol}: {qty:+g} at the last kill, no stop from run {files.runs} at the venue")
    lost = sorted(set(files.venue_fills) - set(files.journal_fills))
    if lost:
        problems.append(f"venue fills missing from the journal: {lost[:5]} ({len(lost)})")
    for cid, state in files.journal_orders.items():
        if state == "intent":
            problems.append(f"{cid}: intent in the journal (not yet sent, or unresolved)")
        elif state in AT_VENUE and cid not in files.venue_orders:
            problems.append(f"{cid}: {state} in the journal, unknown to the venue (should be unsent)")
    if not _same_positions(files.journal_positions, files.venue_positions):
        problems.append(f"positions: journal {files.journal_positions}, venue {files.venue_positions}")
    for symbol, (qty, _) in files.venue_positions.items():
        side = -1 if qty > 0 else 1
        stops = [order for state, order in files.venue_orders.values()
                 if state == "working" and order[1] == symbol and order[3] == "stop" and order[7]
                 and order[2] == side and order[5] >= abs(qty) * (1 - 1e-9)]  # fmt: skip
        if not stops:
            problems.append(f"{symbol}: {qty:+g} at the venue without a working reduce-only stop covering it")
    return problems


def _same_positions(journal: dict, venue: dict) -> bool:
    if set(journal) != set(venue):
        return False
    return all(math.isclose(journal[s][0], venue[s][0], rel_tol=1e-9, abs_tol=1e-12)
               and math.isclose(journal[s][1], venue[s][1], rel_tol=1e-6) for s in venue)  # fmt: skip


def settle(daemon: Daemon, home: Path, unsent_ever: set[str], held_at_kill: dict) -> Files:
    """Freeze the daemon, read the files, let it go on; again until they agree (SETTLE_S at most)."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        assert daemon.proc.poll() is None, f"the daemon exited ({daemon.proc.returncode}):\n{daemon.output()}"
        daemon.proc.send_signal(signal.SIGSTOP)
        try:
            files = Files.read(home)
        finally:
            daemon.proc.send_signal(signal.SIGCONT)
        broken = always(files, unsent_ever)
        assert not broken, broken
        problems = settled(files, held_at_kill)
        if not problems:
            return files
        assert time.monotonic() < deadline, f"not settled after {SETTLE_S} s: {problems}\n{daemon.output()}"
        time.sleep(0.05)


def warm_notes(home: Path) -> int:
    """How many times a run's champion has given its first P(up) (journal notes "... warm after N quotes")."""
    path = home / "journal" / f"daemon-{SLUG}.sqlite"
    if not path.exists():
        return 0
    journal = _read_only(path)
    try:
        return journal.execute("SELECT COUNT(*) FROM events WHERE kind = 'model' AND text LIKE '%warm after%'").fetchone()[0]
    except sqlite3.OperationalError:  # the first run has not created its tables yet
        return 0
    finally:
        journal.close()


def wait_for_warm(daemon: Daemon, home: Path, before: int, timeout_s: float = 30.0) -> None:
    """Until this run's champion trades: a restarted model first warms its features (it holds the
    resumed positions meanwhile, serving/daemon/loop.py), and the trials measure trading, not warm-up."""
    deadline = time.monotonic() + timeout_s
    while warm_notes(home) <= before:
        assert daemon.proc.poll() is None, f"the daemon exited ({daemon.proc.returncode}):\n{daemon.output()}"
        assert time.monotonic() < deadline, f"the champion did not warm up in {timeout_s} s:\n{daemon.output()}"
        time.sleep(0.02)


def wait_for_position(home: Path, timeout_s: float) -> None:
    venue = _read_only(home / "journal" / f"paper-{SLUG}.sqlite")
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            snapshot = json.loads(venue.execute("SELECT snapshot FROM account").fetchone()[0])
            if any(p["qty"] != 0.0 for p in snapshot["portfolio"]["positions"].values()):
                return
            time.sleep(0.005)
    finally:
        venue.close()


@dataclass
class Tally:
    kills_early: int = 0
    restarts_with_position: int = 0  # restarts that found a position at the venue
    settled_with_position: int = 0  # checks that found one still open (so it had a working stop)
    stale_unsent: int = 0  # open in the journal at a kill, never reached the venue: marked unsent on restart
    fills_at_kills: list[int] = field(default_factory=list)


def test_serve_survives_random_kills(home, tmp_path):
    register_champion()
    config = tmp_path / "serve.yaml"
    config.write_text(CONFIG)
    rng = random.Random(7)
    unsent_ever: set[str] = set()
    never_arrived: set[str] = set()  # open in the journal at the last kill, unknown to the venue
    held_at_kill: dict[str, tuple[float, float]] = {}  # the venue's positions at the last kill
    tally = Tally()
    started = time.monotonic()
    for trial in range(TRIALS + 1):
        warm_before = warm_notes(home)
        daemon = Daemon(home, config)
        last = trial == TRIALS
        early = not last and trial % 4 == 3
        if early:  # inside start-up: the journal's new run, reconciliation, the resumed stops, cancels
            daemon.wait_for("serving BTC/USDT:USDT")
            time.sleep(rng.uniform(0.0, 0.08))
            tally.kills_early += 1
        else:
            daemon.wait_for("feed * connected")
            files = settle(daemon, home, unsent_ever, held_at_kill)
            assert files.runs == trial + 1
            for cid in never_arrived:
                assert files.journal_orders[cid] == "unsent", (cid, files.journal_orders[cid])
            tally.stale_unsent += len(never_arrived)
            tally.restarts_with_position += bool(held_at_kill)
            tally.settled_with_position += bool(files.venue_positions)
            if last:
                break
            wait_for_warm(daemon, home, warm_before)
            time.sleep(rng.uniform(0.3, 2.0))
            if trial % 4 == 1:  # and then at the next moment a position is open (they last ~0.1 s)
                wait_for_position(home, timeout_s=3.0)
                time.sleep(rng.uniform(0.0, 0.01))
        assert daemon.kill() == -signal.SIGKILL, daemon.output()
        assert not any("Traceback" in line for line in daemon.lines), daemon.output()
        files = Files.read(home)
        broken = always(files, unsent_ever)
        assert not broken, broken
        never_arrived = {c for c, s in files.journal_orders.items() if s in OPEN and c not in files.venue_orders}
        held_at_kill = files.venue_positions
        unsent_ever |= {c for c, s in files.journal_orders.items() if s == "unsent"}
        tally.fills_at_kills.append(len(files.venue_fills))

    # the last restart stops cleanly (SIGTERM): it keeps its positions and their stops
    assert daemon.kill(signal.SIGTERM) == 0, daemon.output()
    files = Files.read(home)
    assert not always(files, unsent_ever) and not settled(files), (always(files, unsent_ever), settled(files))
    print(f"\n{TRIALS} kills in {time.monotonic() - started:.0f} s: {tally}; {len(files.venue_orders)} orders, "
          f"{len(files.venue_fills)} fills, final positions {files.venue_positions}")  # fmt: skip
    # it traded between the kills, and restarts found positions to protect
    assert len(files.venue_fills) >= TRIALS and len(set(tally.fills_at_kills)) > TRIALS // 2, tally
    assert tally.restarts_with_position >= 3, tally
    # in the market's time: the synthetic feed is never silent, so stale data could only be a restart's
    # clock behind the market's (the kill switch would then close the resumed positions)
    journal = _read_only(home / "journal" / f"daemon-{SLUG}.sqlite")
    stale = journal.execute("SELECT record FROM decisions WHERE record LIKE '%stale market data%'").fetchall()
    journal.close()
    assert not stale, stale[:3]
