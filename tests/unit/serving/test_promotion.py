"""The promotion gate and its window: pure functions over backtest summaries."""

from __future__ import annotations

import math

import pytest

from serving.backtest.config import PromotionGate
from serving.promotion import NoUnseenDataError, best_baseline, judge, promotion_window

MIN = 60 * 1_000_000_000
GATE = PromotionGate(window_minutes=60, min_window_minutes=5, min_pnl_margin_usdt=1.0, max_drawdown_pct=5.0,
                     min_auc=0.52)  # fmt: skip


def summary(pnl: float, dd: float = 1.0, liquidations: int = 0) -> dict:
    return {"net_pnl_usdt": pnl, "max_drawdown_pct": dd, "liquidations": liquidations}


def test_a_better_challenger_passes_every_check():
    passed, reasons = judge(summary(12.0), summary(10.0), "champion v1", 0.55, GATE)
    assert passed
    assert reasons[0] == "pass: net PnL +12.00 USDT >= champion v1 +10.00 + margin 1"


@pytest.mark.parametrize(
    ("challenger", "auc", "failing"),
    [
        (summary(10.5), 0.55, "net PnL"),  # better, but not by the margin
        (summary(20.0, dd=6.0), 0.55, "max drawdown"),
        (summary(20.0, liquidations=1), 0.55, "liquidation"),
        (summary(20.0), 0.51, "AUC"),
        (summary(20.0), math.nan, "AUC"),  # a version without a recorded AUC cannot pass
        (summary(math.nan), 0.55, "net PnL"),
    ],
)
def test_each_check_can_refuse(challenger, auc, failing):
    passed, reasons = judge(challenger, summary(10.0), "champion v1", auc, GATE)
    assert not passed
    failed = [r for r in reasons if r.startswith("FAIL")]
    assert failed and all(failing in r for r in failed), reasons


def test_liquidations_can_be_allowed():
    gate = GATE.model_copy(update={"allow_liquidation": True})
    assert judge(summary(20.0, liquidations=2), summary(10.0), "x", 0.6, gate)[0]


def test_without_a_champion_the_best_baseline_is_the_reference():
    name, reference = best_baseline({"flat": summary(0.0), "no-model": summary(-3.0)})
    assert (name, reference["net_pnl_usdt"]) == ("baseline flat", 0.0)


def test_window_starts_after_both_fits_and_keeps_the_most_recent_data():
    end = 1_000 * MIN
    assert promotion_window(end, [900 * MIN, 950 * MIN], GATE) == (950 * MIN + 1, end + 1)
    # long unseen stretch: only the last window_minutes of it
    assert promotion_window(end, [100 * MIN, None], GATE) == (end - 60 * MIN, end + 1)
    assert promotion_window(end, [None], GATE) == (end - 60 * MIN, end + 1)


def test_too_little_unseen_data_is_refused():
    with pytest.raises(NoUnseenDataError, match="only 2.0 min"):
        promotion_window(1_000 * MIN, [998 * MIN], GATE)
