"""Drift that lasts asks for one early retrain per cooldown: the trigger's timing, and the daemon's
feedback part reading a real drift monitor, journaling and counting its requests."""

from __future__ import annotations

import math

import numpy as np

from pipeline.monitoring.drift import reference_bins
from serving.daemon.config import ServeConfig
from serving.daemon.drift import RETRAIN_DEPLOYMENT, DriftTrigger
from serving.daemon.feedback import RETRAIN_NOTE, Feedback
from serving.runtime.telemetry import DriftMonitor, Telemetry
from serving.state.journal import Journal

SYMBOL = "BTC/USDT:USDT"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_the_trigger_waits_for_lasting_drift_then_cools_down():
    clock = Clock()
    trigger = DriftTrigger(0.25, after_s=60, cooldown_s=3600, clock=clock)
    assert trigger.update(0.1, "a") is None
    assert trigger.update(0.3, "a") is None  # above: the wait starts
    clock.now += 59
    assert trigger.update(0.3, "a") is None
    clock.now += 1
    assert trigger.update(0.31, "ofi") == "drift: psi 0.31 on ofi for 60 s"
    clock.now += 600
    assert trigger.update(0.5, "ofi") is None and trigger.cooling_down()  # once per cooldown
    clock.now += 3000
    assert trigger.update(0.5, "ofi") is not None  # cooled down, still drifting for long enough


def test_a_dip_unknown_psi_or_a_new_model_start_the_wait_again():
    clock = Clock()
    trigger = DriftTrigger(0.25, after_s=60, cooldown_s=0, clock=clock)
    for interruption in (lambda: trigger.update(0.2, "a"), lambda: trigger.update(math.nan, ""), trigger.reset):
        trigger.update(0.3, "a")
        clock.now += 50
        interruption()
        clock.now += 50
        assert trigger.update(0.3, "a") is None  # 100 s above in all, but not 60 in a row
        clock.now += 60
        assert trigger.update(0.3, "a") is not None
        trigger.reset()


def drifting_monitor() -> DriftMonitor:
    rng = np.random.default_rng(0)
    monitor = DriftMonitor(reference_bins(rng.normal(size=(5_000, 2)), ("a", "b")), ("a", "b"), window=500,
                           every=1, min_rows=100)  # fmt: skip
    for row in rng.normal(size=(500, 2)):
        monitor.observe(np.array([row[0] + 2.0, row[1]]))  # "a" moved by two sigmas
    return monitor


def feedback_for(tmp_path, clock, api_url=None, requester=None):  # noqa: ANN001, ANN201
    serve = ServeConfig(drift_retrain_psi=0.25, drift_retrain_after_s=30, drift_retrain_cooldown_s=3600)
    telemetry = Telemetry([SYMBOL], clock=clock)
    journal = Journal(tmp_path / "daemon.sqlite")
    journal.begin_run(0)
    kwargs = {"requester": requester} if requester else {}
    return Feedback(SYMBOL, serve, telemetry, journal, None, api_url=lambda: api_url, clock=clock, **kwargs)


def test_without_a_prefect_api_the_request_is_journaled_and_counted(tmp_path):
    clock = Clock()
    feedback = feedback_for(tmp_path, clock)
    feedback.telemetry.set_drift(SYMBOL, drifting_monitor())
    assert feedback.check_drift() is None  # drifting, not yet for 30 s
    clock.now += 30
    reason = feedback.check_drift()
    assert reason.startswith("drift: psi ") and " on a for 30 s" in reason
    clock.now += 30
    assert feedback.check_drift() is None  # cooling down
    [(_, kind, text)] = feedback.journal.notes(RETRAIN_NOTE)
    assert text.startswith("journaled: drift: psi") and "no Prefect API configured" in text
    assert feedback.telemetry.retrain_requests == {"journaled": 1}
    assert 'autoscalp_retrain_requests_total{outcome="journaled"} 1.0' in feedback.telemetry.exposition().decode()
    assert feedback.telemetry.health()["retrain_request"]["outcome"] == "journaled"
    feedback.stop()
    # a restarted daemon keeps the cooldown of the journaled request (wall time)
    again = Feedback(SYMBOL, feedback.serve, feedback.telemetry, Journal(tmp_path / "daemon.sqlite"), None)
    assert again.trigger.cooling_down()


def test_with_an_api_the_request_goes_to_prefect_and_a_failure_is_journaled(tmp_path):
    clock, calls = Clock(), []

    def requester(reason: str, symbol: str, idempotency_key: str | None = None) -> str:
        calls.append((reason, symbol))
        if len(calls) > 1:
            raise RuntimeError("Deployment 'retrain/retrain' not found\nmore")
        return "run-1"

    feedback = feedback_for(tmp_path, clock, api_url="http://127.0.0.1:4200/api", requester=requester)
    assert feedback.request("drift: psi 0.31 on a") == "prefect"
    assert feedback.request("drift: psi 0.41 on a") == "failed"
    assert calls == [("drift: psi 0.31 on a", SYMBOL), ("drift: psi 0.41 on a", SYMBOL)]
    texts = [text for _, _, text in feedback.journal.notes(RETRAIN_NOTE)]
    assert texts[0].startswith("prefect: drift: psi 0.31 on a; flow run run-1 on http://127.0.0.1:4200/api")
    assert texts[1] == "failed: drift: psi 0.41 on a; RuntimeError: Deployment 'retrain/retrain' not found"
    assert feedback.telemetry.retrain_requests == {"prefect": 1, "failed": 1}


def test_the_deployment_named_is_the_one_autoscalp_schedule_serves():
    from flows.retrain import retrain_flow
    from flows.schedule import RETRAIN_DEPLOYMENT as name

    assert RETRAIN_DEPLOYMENT == f"{retrain_flow.name}/{name}"


def test_a_model_without_reference_has_no_drift_metrics_and_health_says_why(tmp_path):
    feedback = feedback_for(tmp_path, Clock())

    class Runtime:  # what model_changed reads of a ModelRuntime
        version = None

    assert feedback.model_changed(Runtime(), 0) is None
    assert feedback.telemetry.health()["drift"] == {SYMBOL: {"note": "no model"}}
    from pipeline.training.aliases import VersionInfo

    Runtime.version = VersionInfo("autoscalp-BTC-USDT-USDT", 3, (), {}, "")
    feedback._prepared[3] = (None, "no drift reference: autoscalp-BTC-USDT-USDT v3 was registered without one")
    assert feedback.model_changed(Runtime(), 0) is None
    assert "registered without one" in feedback.telemetry.health()["drift"][SYMBOL]["note"]
    text = feedback.telemetry.exposition().decode()
    assert "autoscalp_feature_psi{" not in text and "autoscalp_feature_psi_max{" not in text
    assert feedback.check_drift() is None
