"""The lookahead and warm-up check: does a feature read the future, and is its warm-up declared long enough?

Two experiments on one event stream, run per group of features so that memory stays at about
rows x group x 40 bytes whatever the number of features:

- truncation: recompute on ``events[:cut]`` for several random cuts. A causal feature's values
  before the cut cannot change when the events after it are removed; a difference beyond
  ``TRUNCATION_RTOL`` x its scale means it read the future.
- warm-up: recompute from several later starts (a daemon starting mid-stream). Once a feature has
  seen its declared warm-up again, counted from the start as ``engine.warm_mask`` counts (valid
  quotes, trades, events and mid moves, seconds of event time, then a transform's events after its
  input is warm), its values must match the full run within ``WARMUP_RTOL`` x its scale; a larger
  error means the declaration is too short. The full run is the reference: it has seen everything
  the restarted one has, and more. A restart keeps the depth summaries of the stream, which come
  from the book replayed from its snapshot (``events``): a daemon starting mid-stream fetches a
  snapshot too, so only the depth features restart.

Scale: the standard deviation of the full run's warm values clipped to their 1st and 99th
percentiles, the spread of the bulk a model sees. The plain standard deviation is blown up by the
heavy tails of the volume and illiquidity features and would hide errors; a median absolute
deviation collapses where a mid that does not move makes ret/bbz/smacross exactly 0 (or rounding
residue) in over half the rows. Where even the clipped values are all equal: the standard
deviation, then max |v|, then 1.

Tolerances: 1e-3 of that scale for the warm-up. Exponentially weighted state forgets where it
started only exponentially, so after any finite warm-up "equal" can only mean "close"; 1e-3 is
the target the declarations in ``pipeline.features.families`` are written to, and a thousandth of a
feature's typical variation is below anything a model can use. 1e-12 for truncation: a causal
computation repeats the same floating-point operations on the same inputs and so is exact; the
margin only admits an alternative implementation's summation order. Non-finite values after the
declared warm-up in the full run are reported too (NaN must never reach a warm value).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.config import AppConfig, SyntheticSourceConfig
from pipeline.data.sources.files import FileSource
from pipeline.data.sources.synthetic import SyntheticSource
from pipeline.features.catalog import catalog, compile_program
from pipeline.features.engine import PROGRESS, event_progress, run_program, warm_mask
from pipeline.features.events import EventArrays, events_from_batches

TRUNCATION_RTOL = 1e-12
WARMUP_RTOL = 1e-3
CLIP_PERCENTILES = (1.0, 99.0)
MEMORY_BYTES = 256 * 2**20  # per group of features: full run, recomputation, errors, temporaries
BYTES_PER_VALUE = 40
QUICK_EVENTS = 20_000

Compute = Callable[[EventArrays, tuple[str, ...]], np.ndarray]


def batch_values(events: EventArrays, names: tuple[str, ...]) -> np.ndarray:
    """The shipped batch path: values after every event, [len(events), len(names)]."""
    return run_program(compile_program(names), events)[0]


@dataclass(frozen=True)
class Leak:
    name: str
    cut: int  # the events were cut off here
    row: int  # the first row before the cut whose value changed
    error: float  # worst |difference| / scale before the cut


@dataclass(frozen=True)
class ShortWarmup:
    name: str
    declared: dict[str, float]  # quotes, trades, events, seconds
    start: int  # the restart where the worst error was seen
    error: float  # worst |difference| / scale after the declared warm-up
    still_off_after: dict[str, float]  # what the restarted run had seen at its last error > tolerance


@dataclass
class CheckReport:
    """What the check found; ``exit_code`` is the CLI's exit status, ``summary()`` its output."""

    source: str
    events: int
    names: tuple[str, ...]
    cuts: tuple[int, ...]
    starts: tuple[int, ...]
    leaks: list[Leak] = field(default_factory=list)
    short_warmups: list[ShortWarmup] = field(default_factory=list)
    nonfinite: dict[str, int] = field(default_factory=dict)  # warm rows of the full run that are NaN/inf
    unverified: list[str] = field(default_factory=list)  # never warm after any start: too little data
    worst_warmup_error: dict[str, float] = field(default_factory=dict)  # / scale, every verified feature
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.leaks or self.short_warmups or self.nonfinite)

    @property
    def exit_code(self) -> int:
        """0 when nothing leaks, every verified warm-up holds and no warm value is NaN/inf; else 1."""
        return 0 if self.ok else 1

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "source": self.source,
            "events": self.events,
            "features": len(self.names),
            "cuts": list(self.cuts),
            "starts": list(self.starts),
            "truncation_rtol": TRUNCATION_RTOL,
            "warmup_rtol": WARMUP_RTOL,
            "scale": "std of the full run's warm values clipped to their 1st-99th percentiles",
            "leaks": [vars(leak) for leak in self.leaks],
            "short_warmups": [vars(short) for short in self.short_warmups],
            "nonfinite_after_warmup": self.nonfinite,
            "unverified": self.unverified,
            "worst_warmup_error": self.worst_warmup_error,
            "seconds": round(self.seconds, 2),
        }

    def summary(self) -> str:
        verified = len(self.names) - len(self.unverified)
        lines = [
            (f"feature check: {len(self.names)} features on {self.events:,} events ({self.source}), "
             f"cuts {list(self.cuts)}, starts {list(self.starts)}, {self.seconds:.1f} s"),
            (f"lookahead: {len(self.leaks) or 'none'} "
             f"(values before a cut must not change, tolerance {TRUNCATION_RTOL:g} x scale)"),
            (f"warm-up: {verified} verified, {len(self.short_warmups)} declared too short, "
             f"{len(self.unverified)} not verifiable on this data (declared warm-up longer than the data "
             f"after every start); tolerance {WARMUP_RTOL:g} x scale"),
        ]
        for leak in self.leaks:
            lines.append(f"  LEAK {leak.name}: changed {leak.error:.3g} x scale at row {leak.row} when cut at {leak.cut}")
        for short in self.short_warmups:
            lines.append(
                f"  SHORT WARM-UP {short.name}: {short.error:.3g} x scale after start {short.start}, still off after "
                f"{_describe(short.still_off_after)} (declared {_describe(short.declared)})"
            )
        for name, count in self.nonfinite.items():
            lines.append(f"  NON-FINITE {name}: {count} warm rows are NaN/inf")
        lines.append("OK" if self.ok else "FAILED")
        return "\n".join(lines)


def _describe(counts: dict[str, float]) -> str:
    parts = [f"{value:g} {unit}" for unit, value in counts.items() if value]
    return ", ".join(parts) or "nothing"


def _as_warmup(row: np.ndarray) -> dict[str, float]:
    """Counters (``engine.PROGRESS``, then a declaration's after_events) by name."""
    counts = {name: round(float(value), 3) for name, value in zip(PROGRESS, row)}
    if len(row) > len(PROGRESS):
        counts["events after"] = float(row[len(PROGRESS)])
        counts["depth after"] = float(row[len(PROGRESS) + 1])
    return counts


def robust_scale(values: np.ndarray, warm: np.ndarray) -> np.ndarray:
    """Per column: the standard deviation of the warm finite values (all finite values if none is
    warm) clipped to their 1st-99th percentiles; else their standard deviation, else max |v|, else 1."""
    scales = np.ones(values.shape[1])
    for j in range(values.shape[1]):
        column = values[:, j]
        v = column[warm[:, j] & np.isfinite(column)]
        if v.size == 0:
            v = column[np.isfinite(column)]
        if v.size == 0:
            continue
        low, high = np.percentile(v, CLIP_PERCENTILES)
        for candidate in (np.clip(v, low, high).std(), v.std(), np.abs(v).max()):
            if candidate > 0.0:
                scales[j] = candidate
                break
    return scales


def relative_error(a: np.ndarray, b: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """|a - b| / scale; 0 where equal (NaN and NaN included), inf where only one side is NaN."""
    with np.errstate(invalid="ignore"):
        error = np.abs(a - b) / scale
    error[(a == b) | (np.isnan(a) & np.isnan(b))] = 0.0
    error[np.isnan(error)] = np.inf
    return error


def _positions(spec: int | Sequence[int], n: int, low: float, high: float, rng: np.random.Generator) -> tuple[int, ...]:
    if isinstance(spec, int):
        if n < 4:
            return ()
        spec = rng.integers(max(1, int(low * n)), max(2, int(high * n)), size=spec)
    return tuple(sorted({int(p) for p in spec if 0 < int(p) < n}))


def check_features(
    events: EventArrays,
    names: Sequence[str] | None = None,
    compute: Compute | None = None,
    cuts: int | Sequence[int] = 3,
    starts: int | Sequence[int] = 3,
    seed: int = 0,
    source: str = "events",
    memory_bytes: int = MEMORY_BYTES,
) -> CheckReport:
    """Truncation (lookahead) and warm-up check of ``names`` (default: every candidate) on ``events``.

    ``compute(events, names) -> values [len(events), len(names)]`` is the computation under test
    (default: the shipped batch path). An int for ``cuts``/``starts`` draws that many positions
    with ``seed``: cuts in [10 %, 100 %) of the stream, restarts in [5 %, 50 %) so that long
    warm-ups still fit in what follows.
    """
    began = time.perf_counter()
    names = tuple(catalog()) if names is None else tuple(names)
    compute = batch_values if compute is None else compute
    n = len(events)
    rng = np.random.default_rng(seed)
    report = CheckReport(source, n, names, _positions(cuts, n, 0.10, 1.0, rng), _positions(starts, n, 0.05, 0.5, rng))
    full_progress = event_progress(events)
    restart_progress = {s: event_progress(events.slice(s)) for s in report.starts}
    group = max(1, memory_bytes // (max(n, 1) * BYTES_PER_VALUE))
    verified: set[str] = set()
    for lo in range(0, len(names), group):
        _check_group(events, names[lo:lo + group], compute, full_progress, restart_progress, report, verified)
    report.unverified = [name for name in names if name not in verified]
    report.seconds = time.perf_counter() - began
    return report


def _check_group(events, names, compute, full_progress, restart_progress, report, verified) -> None:
    program = compile_program(names)
    full = np.asarray(compute(events, names), dtype=np.float64)
    warm = warm_mask(program, full_progress)
    scale = robust_scale(full, warm)
    for j in np.flatnonzero((warm & ~np.isfinite(full)).any(axis=0)):
        report.nonfinite[names[j]] = int((warm[:, j] & ~np.isfinite(full[:, j])).sum())
    del warm

    for cut in report.cuts:
        error = relative_error(np.asarray(compute(events.slice(0, cut), names), dtype=np.float64), full[:cut], scale)
        bad = error > TRUNCATION_RTOL
        for j in np.flatnonzero(bad.any(axis=0)):
            if not any(leak.name == names[j] for leak in report.leaks):
                report.leaks.append(Leak(names[j], cut, int(np.argmax(bad[:, j])), float(error[:, j].max())))

    worst: dict[int, ShortWarmup] = {}
    for start, progress in restart_progress.items():
        warm = warm_mask(program, progress)
        error = relative_error(np.asarray(compute(events.slice(start), names), dtype=np.float64), full[start:], scale)
        error[~warm] = 0.0
        top = error.max(axis=0)
        for j in np.flatnonzero(warm.any(axis=0)):
            verified.add(names[j])
            report.worst_warmup_error[names[j]] = max(report.worst_warmup_error.get(names[j], 0.0), float(top[j]))
            if top[j] > WARMUP_RTOL and (j not in worst or top[j] > worst[j].error):
                last = len(error) - 1 - int(np.argmax(error[::-1, j] > WARMUP_RTOL))
                worst[j] = ShortWarmup(
                    names[j], _as_warmup(program.warmup[j]), start, float(top[j]), _as_warmup(progress[last])
                )
    report.short_warmups.extend(worst[j] for j in sorted(worst))


def quick_names() -> tuple[str, ...]:
    """A small subset for tests: every family at a short window (20 updates, 10 for depth), a few
    transforms."""
    picked = []
    seen: set[str] = set()
    for name, spec in catalog().items():
        family = spec.family.name
        short = 10.0 if spec.family.is_depth else 20.0
        if spec.transform == 0 and family not in seen and (spec.family.unit != "tick" or spec.window == short):
            seen.add(family)
            picked.append(name)
    return tuple(picked) + ("rv_tick_50_z200", "ofi_tick_20_d50", "bookimb_l1_z200", "depthimb_l5_z200")


def synthetic_events(config: SyntheticSourceConfig, symbol: str) -> EventArrays:
    """The simulator's event stream for one symbol."""
    return events_from_batches(SyntheticSource(config, (symbol,)).batches(), symbol)


def run_check(
    config: AppConfig,
    names: Sequence[str] | None = None,
    path: str | Path | None = None,
    symbol: str | None = None,
    quick: bool = False,
    seed: int = 0,
) -> CheckReport:
    """``autoscalp features check``: the check on a market-data file (``path``) or, by default, on
    the configured synthetic stream of the first configured symbol. ``quick``: ``quick_names()``
    on at most 20,000 events. Exit with ``report.exit_code``."""
    if path is not None:
        events = events_from_batches(FileSource(path).batches(), symbol)
        source = str(path)
    else:
        synthetic = config.sources.synthetic
        if quick:
            synthetic = synthetic.model_copy(update={"ticks": min(synthetic.ticks, QUICK_EVENTS)})
        events = synthetic_events(synthetic, symbol or config.symbols[0])
        source = f"synthetic seed={synthetic.seed} ticks={synthetic.ticks}"
    if quick:
        events = events.slice(0, QUICK_EVENTS)
        names = quick_names() if names is None else names
    return check_features(events, names, seed=seed, source=source)
