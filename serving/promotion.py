"""Backtest-gated promotion: a challenger becomes ``champion`` only if it beats the champion on the
same recent window that neither of them was fitted on.

The window: from the later of the two versions' ``autoscalp.fit_end_ns`` (the last event their fit
saw, labels included) to the end of the store, at most ``window_minutes`` of it (the most recent),
and at least ``min_window_minutes`` or no decision is taken. With no champion yet, the challenger
is compared with the baselines on that window (the better of ``flat`` and ``no-model``).

The gate (``PromotionGate``): net PnL >= reference + margin, max drawdown <= limit, no liquidation
(unless allowed), out-of-sample AUC of its retrain >= floor. Every reason is kept, pass or fail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pipeline.errors import AutoscalpError
from serving.backtest.config import PromotionGate

_NS_PER_MIN = 60 * 1_000_000_000


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: tuple[str, ...]
    reference: str  # "champion v3" or "baselines"
    window: tuple[int, int]
    challenger: dict = field(default_factory=dict)  # backtest summary
    compared_with: dict = field(default_factory=dict)  # champion summary or {baseline: summary}

    def to_json(self) -> dict:
        return {"promote": self.promote, "reasons": list(self.reasons), "reference": self.reference,
                "window": {"start_ns": self.window[0], "end_ns": self.window[1]},
                "challenger": self.challenger, "compared_with": self.compared_with}


class NoUnseenDataError(AutoscalpError):
    """Too little data after both models' fits to judge them on."""


def promotion_window(data_end_ns: int, fit_ends: list[int | None], gate: PromotionGate) -> tuple[int, int]:
    """[start, end): the most recent data after every given fit end, at most ``window_minutes`` long."""
    known = [t for t in fit_ends if t is not None]
    start = max(known) + 1 if known else data_end_ns - int(gate.window_minutes * _NS_PER_MIN)
    start = max(start, data_end_ns - int(gate.window_minutes * _NS_PER_MIN))
    end = data_end_ns + 1
    if end - start < gate.min_window_minutes * _NS_PER_MIN:
        minutes = max(end - start, 0) / _NS_PER_MIN
        raise NoUnseenDataError(
            f"only {minutes:.1f} min of data after the models' fits (need {gate.min_window_minutes:g}): "
            "ingest newer ticks before promoting"
        )
    return start, end


def judge(challenger: dict, reference: dict, reference_name: str, auc: float, gate: PromotionGate) -> tuple[bool, tuple[str, ...]]:
    """The gate over two backtest summaries (``serving.metrics.summarise``) and the challenger's AUC."""
    reasons: list[str] = []

    def check(ok: bool, text: str) -> None:
        reasons.append(("pass: " if ok else "FAIL: ") + text)

    pnl, ref_pnl = _num(challenger.get("net_pnl_usdt")), _num(reference.get("net_pnl_usdt"))
    need = ref_pnl + gate.min_pnl_margin_usdt
    ok = pnl >= need
    check(ok, f"net PnL {pnl:+.2f} USDT {'>=' if ok else '<'} {reference_name} {ref_pnl:+.2f} + margin "
                   f"{gate.min_pnl_margin_usdt:g}")  # fmt: skip
    dd = _num(challenger.get("max_drawdown_pct"))
    ok = dd <= gate.max_drawdown_pct
    check(ok, f"max drawdown {dd:.2f} % {'<=' if ok else '>'} limit {gate.max_drawdown_pct:g} %")
    liquidations = int(challenger.get("liquidations") or 0)
    ok = gate.allow_liquidation or liquidations == 0
    check(ok, f"{liquidations} liquidation(s){'' if ok else ' (not allowed)'}")
    ok = auc >= gate.min_auc
    check(ok, f"out-of-sample AUC {auc:.3f} {'>=' if ok else '<'} floor {gate.min_auc:g}")
    return all(r.startswith("pass") for r in reasons), tuple(reasons)


def best_baseline(baselines: dict[str, dict]) -> tuple[str, dict]:
    name = max(baselines, key=lambda k: _num(baselines[k].get("net_pnl_usdt")))
    return f"baseline {name}", baselines[name]


def _num(value) -> float:  # noqa: ANN001
    try:
        number = float(value)
    except (TypeError, ValueError):
        return -math.inf
    return number if math.isfinite(number) else -math.inf if number != number else number
