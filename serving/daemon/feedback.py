"""The daemon's side of self-learning: drift metrics of the trading model, the journal exported to
the store, and an early retrain asked for when drift lasts.

- Loading (the champion watcher's thread): ``loader`` wraps ``load_runtime``; after the runtime it
  reads the version's drift reference (pipeline.monitoring.drift) and builds its ``DriftMonitor``
  (the numba binding compiles here, not on the trading thread). A version without a reference, or
  with one that cannot be read, still loads and trades: its drift is reported as absent, with why.
- Trading thread: ``model_changed`` at start and at each swap journals which version trades from
  the next row on (serving/state/feedback.py) and hands its monitor to telemetry; the daemon feeds
  the monitor each quote's feature vector.
- Its own thread, off the decision path: every ``CHECK_S`` the drift trigger reads the monitor;
  every ``serve.feedback_export_s``, and once more at stop, the journal's new decisions and fills
  go to the store. A retrain request goes to Prefect when an API is configured; without one, or
  when the request fails, it is journaled (on this thread's own journal connection: a rare write,
  the trading thread waits at most that one commit) and counted in ``autoscalp_retrain_requests``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from serving.daemon.drift import DriftTrigger, prefect_api_url, request_retrain
from serving.runtime.telemetry import DriftMonitor
from serving.state.feedback import FeedbackExporter, note_model

log = logging.getLogger(__name__)

CHECK_S = 5.0  # how often the drift trigger reads the monitor
DRIFT_WINDOW = 5_000  # sampled rows in the PSI window
DRIFT_EVERY = 10  # every 10th quote's vector is sampled (~1 us per sample)
DRIFT_MIN_ROWS = 1_000  # sampled rows before a feature's PSI is reported (fewer: noise)
RETRAIN_NOTE = "retrain_request"


class Feedback:
    def __init__(self, symbol: str, serve: Any, telemetry: Any, journal: Any, store_root: Any, *,
                 requester: Callable[..., str] = request_retrain, api_url: Callable[[], str | None] = prefect_api_url,
                 clock: Callable[[], float] = time.time, check_s: float = CHECK_S,
                 drift_window: int = DRIFT_WINDOW, drift_every: int = DRIFT_EVERY,
                 drift_min_rows: int = DRIFT_MIN_ROWS) -> None:  # fmt: skip
        self.symbol, self.serve, self.telemetry, self.journal = symbol, serve, telemetry, journal
        self.exporter = FeedbackExporter(journal.path, store_root) if store_root is not None else None
        self.trigger = DriftTrigger(serve.drift_retrain_psi, serve.drift_retrain_after_s,
                                    serve.drift_retrain_cooldown_s, clock)  # fmt: skip
        self.requester, self.api_url, self.clock, self.check_s = requester, api_url, clock, check_s
        self.drift_window, self.drift_every, self.drift_min_rows = drift_window, drift_every, drift_min_rows
        self._prepared: dict[int, tuple[DriftMonitor | None, str]] = {}  # version -> (monitor, why none)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._side_journal: Any = None  # this thread's own connection, opened on the first request
        self._restore_cooldown()

    # ---- the loader's thread --------------------------------------------------------------------

    def loader(self, load: Callable[..., Any]) -> Callable[..., Any]:
        """``load`` (``load_runtime``'s signature) that also prepares the version's drift monitor."""

        def load_with_drift(info: Any, *args: Any, **kwargs: Any) -> Any:
            runtime = load(info, *args, **kwargs)
            self.prepare(info, runtime.names)
            return runtime

        return load_with_drift

    def prepare(self, info: Any, vector_names: tuple[str, ...]) -> None:
        from pipeline.monitoring.drift import load_reference

        try:
            reference = load_reference(info.uri)
            if reference is None:
                prepared = None, f"no drift reference: {info.name} v{info.version} was registered without one"
            else:
                prepared = DriftMonitor(reference, vector_names, self.drift_window, self.drift_every,
                                        self.drift_min_rows), ""  # fmt: skip
        except Exception as exc:  # noqa: BLE001 (drift is reported, never a reason not to trade)
            prepared = None, f"no drift reference: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            log.warning("%s v%s: %s", info.name, info.version, prepared[1])
        with self._lock:
            self._prepared[info.version] = prepared

    # ---- the trading thread ---------------------------------------------------------------------

    def model_changed(self, runtime: Any, ts_ns: int) -> DriftMonitor | None:
        """``runtime`` trades from now on: journal it, hand its drift monitor to telemetry and return
        it (None without a model or a reference)."""
        version = getattr(runtime, "version", None)
        note_model(self.journal, version, ts_ns)
        if version is None:
            monitor, why = None, "no model"
        else:
            with self._lock:
                monitor, why = self._prepared.pop(version.version, (None, "no drift reference: not prepared"))
        self.telemetry.set_drift(self.symbol, monitor, why)
        self.trigger.reset()
        return monitor

    # ---- its own thread -------------------------------------------------------------------------

    def start(self) -> Feedback:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"feedback {self.symbol}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the thread and export what the journal holds now (call after the journal's last write)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self.export()
        if self.exporter is not None:
            self.exporter.close()
        if self._side_journal is not None:
            self._side_journal.close()
            self._side_journal = None

    def _run(self) -> None:
        next_export = time.monotonic() + self.serve.feedback_export_s
        while not self._stop.wait(self.check_s):
            try:
                self.check_drift()
            except Exception:  # noqa: BLE001 (the thread must outlive any one failure)
                log.exception("drift check")
            if time.monotonic() >= next_export:
                self.export()
                next_export = time.monotonic() + self.serve.feedback_export_s

    def export(self) -> dict[str, int]:
        if self.exporter is None:
            return {}
        try:
            counts = self.exporter.export()
        except Exception as exc:  # noqa: BLE001 (the next export retries from the watermark)
            log.warning("feedback export to the store failed (retried at the next one): %s: %s",
                        type(exc).__name__, exc)  # fmt: skip
            return {}
        for kind, rows in counts.items():
            self.telemetry.note_export(kind, rows)
        return counts

    def check_drift(self) -> str | None:
        """One reading of the trading model's drift; the retrain reason if one was requested now."""
        monitor = self.telemetry.drift.get(self.symbol)
        if monitor is None:
            self.trigger.reset()
            return None
        value, feature = monitor.max_psi()
        reason = self.trigger.update(value, feature)
        if reason is not None:
            label = self.telemetry.models[self.symbol].label
            self.request(f"{reason} ({self.symbol} {label})")
        return reason

    def request(self, reason: str) -> str:
        """Ask for a retrain; returns the outcome: ``prefect``, ``journaled`` (no API) or ``failed``."""
        url = self.api_url()
        outcome, detail = "journaled", "no Prefect API configured (PREFECT_API_URL)"
        if url:
            try:
                run_id = self.requester(reason, self.symbol, idempotency_key=f"{self.symbol}|{reason}")
                outcome, detail = "prefect", f"flow run {run_id} on {url}"
            except Exception as exc:  # noqa: BLE001 (the request is journaled instead, and says why)
                text = str(exc).splitlines()[0][:200] if str(exc) else ""
                outcome, detail = "failed", f"{type(exc).__name__}: {text}"
        log.warning("early retrain requested (%s): %s; %s", outcome, reason, detail)
        self._journal_note(f"{outcome}: {reason}; {detail}")
        self.telemetry.note_retrain_request(outcome, reason, detail)
        return outcome

    def _journal_note(self, text: str) -> None:
        from serving.state.journal import Journal

        try:
            if self._side_journal is None:
                self._side_journal = Journal(self.journal.path, self.journal.durable)
            self._side_journal.note(RETRAIN_NOTE, text, time.time_ns())
        except Exception as exc:  # noqa: BLE001
            log.warning("journaling the retrain request failed: %s", exc)

    def _restore_cooldown(self) -> None:
        """A restarted daemon keeps the cooldown of a request made before it (wall time)."""
        notes = self.journal.notes(RETRAIN_NOTE)
        if notes:
            self.trigger.last_request = notes[-1][0] / 1e9
