"""What a model that starts trading changes in the engine (serving/daemon/loop.py's module doc):
the hold while it has no P(up) yet, and its tuned strategy parameters at the first flat moment."""

from __future__ import annotations

import logging
from typing import Any

from serving.engine import Engine, RetuneError
from serving.events import DecisionRecord
from serving.runtime.model import ModelRuntime

log = logging.getLogger(__name__)

WARM_GRACE_QUOTES = 1_000  # quotes after the features' declared warm-up before a missing P(up) is a failure


class ModelSwitch:
    """The daemon's trading thread only; notes go to ``journal``."""

    def __init__(self, journal: Any) -> None:
        self.journal = journal
        self.pending: tuple[Any, str] | None = None  # (engine config, version) waiting for a flat moment
        self._warm_quotes = 0  # quotes since the warming model's features warmed, without a P(up)

    def hold_while_warming(self, engine: Engine, runtime: ModelRuntime, ts_ns: int) -> None:
        """A model that has no P(up) yet holds the engine until its first."""
        if runtime.compiled is None or runtime.last_ok:
            engine.warming = ""
            return
        engine.warming = f"{runtime.version_label} warming up"
        self._warm_quotes = 0
        self.journal.note("model", f"{runtime.version_label} warming up: positions keep their stops, nothing new "
                          "opens until its first P(up)", ts_ns)  # fmt: skip

    def warming_quote(self, engine: Engine, runtime: ModelRuntime, ok: bool, ts_ns: int) -> None:
        """A quote while the engine holds: its first P(up) ends the hold, or a failure after the grace."""
        if ok:
            why = f"warm after {runtime.quotes} quotes: trading"
        else:
            if not runtime.warm:
                return
            self._warm_quotes += 1
            if self._warm_quotes < WARM_GRACE_QUOTES:
                return
            why = f"still no P(up) {WARM_GRACE_QUOTES} quotes after its features warmed: a model failure"
        engine.warming = ""
        self.journal.note("model", f"{runtime.version_label} {why}", ts_ns)

    @staticmethod
    def retune_for(engine: Engine, runtime: ModelRuntime) -> tuple[Any, str] | None:
        """The engine configuration ``runtime``'s version trades with, if the engine's differs."""
        target = runtime.engine_config
        if target is None:
            return None
        target = target.model_copy(update={"client_id_prefix": engine.config.client_id_prefix})
        return (target, runtime.version_label) if target != engine.config else None

    def apply_retune(self, engine: Engine, now: int) -> DecisionRecord | None:
        """The pending strategy parameters, if no position is open now (else at a later clock); the
        engine's record of the change, for the daemon to act on."""
        if any(st.position.qty != 0.0 for st in engine.symbols.values()):
            return None
        config, label = self.pending
        self.pending = None
        try:
            record = engine.retune(config, now)
        except RetuneError as exc:
            self.journal.note("strategy", f"{label}: {exc}", now)
            log.warning("%s: %s", label, exc)
            return None
        text = "; ".join(n for n in (record.notes if record is not None else ()) if n.startswith("strategy param"))
        self.journal.note("strategy", f"{label}'s {text}", now)
        log.info("%s's %s", label, text)
        return record
