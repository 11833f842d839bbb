"""conf/monitoring (Grafana dashboard, Prometheus scrape config, alert rules) against the metrics the
daemon really exports: every metric a query names is in a live Telemetry's exposition. With promtool
installed (Debian: `apt-get install prometheus`) the files are also checked, every dashboard query is
parsed as PromQL, and the alert rules' unit tests (alerts_test.yml) run."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from serving.runtime.telemetry import DriftMonitor, Telemetry, reference_bins

KIT = Path(__file__).resolve().parents[4] / "conf" / "monitoring"
METRIC = re.compile(r"\b(autoscalp_[a-z0-9_]+)")
SCRAPE_SERIES = {"up"}  # what Prometheus adds to every target itself
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool absent (Debian: apt-get install prometheus)")


def exported_names() -> set[str]:
    """Sample names of a daemon's exposition with every family populated (a drift monitor set)."""
    telemetry = Telemetry(["BTC/USDT:USDT"])
    telemetry.tick(0, 3_000)
    telemetry.set_account(10_000.0, 12.5, 0.01)
    bins = reference_bins(np.random.default_rng(0).normal(size=(500, 2)), ("ofi_tick_100", "rv_tick_50"))
    monitor = DriftMonitor(bins, ("ofi_tick_100", "rv_tick_50"), window=100, every=1)
    monitor.observe(np.array([0.1, 0.2]))
    telemetry.set_drift("BTC/USDT:USDT", monitor)
    families = text_string_to_metric_families(telemetry.exposition().decode())
    return {sample.name for family in families for sample in family.samples}


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((KIT / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict:
    return json.loads((KIT / "grafana-dashboard.json").read_text())


def dashboard_queries(board: dict) -> list[str]:
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    variables = [v["definition"] for v in board["templating"]["list"] if v["type"] == "query"]
    return exprs + variables


def test_every_metric_the_kit_names_is_exported_by_the_daemon():
    exported = exported_names()
    assert {"autoscalp_tick_to_decision_seconds_bucket", "autoscalp_ticks_total", "autoscalp_feature_psi_max"} <= exported
    queries = dashboard_queries(dashboard()) + [rule["expr"] for rule in alert_rules()]
    named = set()
    for query in queries:
        names = set(METRIC.findall(query))
        assert names or re.search(r"\bup\{", query), f"no metric in {query!r}"
        named |= names
    assert not named - exported, f"not exported by the daemon: {sorted(named - exported)}"
    # the dashboard shows the headline state, the alerts watch it
    for name in ("autoscalp_kill_switch", "autoscalp_equity_usdt", "autoscalp_pnl_usdt", "autoscalp_position_qty",
                 "autoscalp_model_age_seconds", "autoscalp_feature_psi_max", "autoscalp_drawdown_ratio"):
        assert any(name in q for q in dashboard_queries(dashboard())), name


def test_each_alert_has_expr_for_severity_and_summary():
    rules = alert_rules()
    names = {rule["alert"] for rule in rules}
    assert {"AutoscalpKillSwitchHalted", "AutoscalpStaleFeed", "AutoscalpModelTooOld", "AutoscalpFeatureDrift",
            "AutoscalpDrawdown"} <= names
    for rule in rules:
        assert rule["expr"] and "for" in rule, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_scrape_config_targets_the_daemon_and_loads_the_rules():
    from serving.daemon.config import ServeConfig

    config = yaml.safe_load((KIT / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    serve = ServeConfig()
    assert job["static_configs"][0]["targets"] == [f"{serve.host}:{serve.http_port}"]
    assert job["metrics_path"] == "/metrics"
    assert config["rule_files"] == ["alerts.yml"]
    down = next(r for r in alert_rules() if r["alert"] == "AutoscalpDaemonDown")
    assert f'job="{job["job_name"]}"' in down["expr"]


def test_dashboard_panels_are_well_formed():
    board = dashboard()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in board["templating"]["list"]}
    for panel in board["panels"]:
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert set(re.findall(r"\$(\w+)", target["expr"])) <= variables, target["expr"]


@needs_promtool
def test_promtool_accepts_the_config_and_rules_and_the_rule_tests_pass():
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"],
                 ["test", "rules", "alerts_test.yml"]):  # fmt: skip
        result = subprocess.run([PROMTOOL, *args], cwd=KIT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"promtool {' '.join(args)}: {result.stdout}{result.stderr}"


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path):
    """Each query as a recording rule: `promtool check rules` parses its PromQL."""
    rules = [{"record": f"autoscalp:dashboard_query_{i}", "expr": q} for i, q in enumerate(dashboard_queries(dashboard()))
             if not q.startswith("label_values")]  # fmt: skip
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
