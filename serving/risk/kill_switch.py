"""The kill switch: ACTIVE -> REDUCING -> HALTED, always with a reason.

- ACTIVE: trading.
- REDUCING: only orders that reduce exposure pass the risk manager, and the engine actively closes
  open positions. Entered on trouble that may pass (stale market data, model failure), lifted
  after ``recover_ms`` without trouble.
- HALTED: flat and no orders at all. A halt (daily loss limit, max drawdown, the operator) goes
  through REDUCING until every position is closed, since a halted engine could not close one.
  It lifts only by ``resume()``, or at the next UTC day for a daily-loss halt when configured.

The switch is portfolio-wide: one stale feed or a failing model is reason enough to stop adding
risk anywhere.
"""

from __future__ import annotations

ACTIVE, REDUCING, HALTED = 0, 1, 2
STATES = ("active", "reducing", "halted")


class KillSwitch:
    __slots__ = ("state", "reason", "halt_pending", "_halt_reason", "_halt_until_ns", "_last_trouble_ns", "_recover_ns")

    def __init__(self, recover_ms: int) -> None:
        self.state = ACTIVE
        self.reason = ""
        self._halt_reason = ""
        self.halt_pending = False  # a halt was requested (a plain attribute: read on every tick)
        self._halt_until_ns = -1  # a halt that lifts by itself at this time (the next UTC day)
        self._last_trouble_ns = 0
        self._recover_ns = recover_ms * 1_000_000

    def halt(self, reason: str, until_ns: int = -1) -> None:
        """Request a halt (lifting by itself at ``until_ns`` if given); the first reason stands."""
        if not self._halt_reason:
            self._halt_reason, self._halt_until_ns = reason, until_ns
            self.halt_pending = bool(reason)

    def resume(self) -> None:
        """The operator lifts a halt; trouble still present keeps the switch REDUCING."""
        self._halt_reason, self._halt_until_ns = "", -1
        self.halt_pending = False

    def evaluate(self, now_ns: int, trouble: str, flat: bool) -> str:
        """Apply this event's health; returns a note when the state changed, else ''."""
        if not trouble and not self._halt_reason and self.state == ACTIVE:
            return ""
        before = self.state
        if self._halt_reason and 0 <= self._halt_until_ns <= now_ns:
            self.resume()
        if self._halt_reason:
            self.state, self.reason = (HALTED if flat else REDUCING), self._halt_reason
        elif trouble:
            self.state, self.reason = REDUCING, trouble
            self._last_trouble_ns = now_ns
        elif now_ns - self._last_trouble_ns >= self._recover_ns or before == HALTED:
            self.state, self.reason = ACTIVE, ""
        if self.state != before:
            return f"kill switch {STATES[before]} -> {STATES[self.state]}" + (f": {self.reason}" if self.reason else "")
        return ""
