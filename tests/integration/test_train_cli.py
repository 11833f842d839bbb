"""`autoscalp train` as a user runs it: ingest -> features build -> train, in real processes.

On the synthetic default (what `make demo` does) with a small trial budget it logs four model runs and
the ensemble and registers version 1 of autoscalp-BTC-USDT-USDT with alias challenger; with an
unreachable tracking server it fails in one line and registers nothing. On real Binance USD-M
ticks (about six minutes each of BTC and ETH) it reports out-of-sample AUC per model and ensemble;
nothing is asserted about their values there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .short_data import short_data_yaml

REPO = Path(__file__).resolve().parents[2]
KINDS = ["ensemble", "forest", "logistic", "lstm", "xgb"]


def autoscalp(home: Path, *args: str, timeout: float = 600, **env_extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AUTOSCALP_HOME": str(home), **env_extra}
    for key in ("AUTOSCALP_CONFIG", "PREFECT_API_URL", "PREFECT_HOME", "MLFLOW_TRACKING_URI"):
        if key not in env_extra:
            env.pop(key, None)
    return subprocess.run([sys.executable, "-m", "flows", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


def model_versions(home: Path) -> list:
    from mlflow import MlflowClient

    db = home / "mlflow" / "mlflow.db"
    uri = f"sqlite:///{db}"  # the registry too: an earlier test may have set another one process-wide
    return MlflowClient(tracking_uri=uri, registry_uri=uri).search_model_versions() if db.exists() else []


@pytest.fixture(scope="module")
def built_home(tmp_path_factory) -> Path:
    """The synthetic default ingested and its features built (as `make demo` does)."""
    home = tmp_path_factory.mktemp("built") / "home"
    for args in (("ingest", "--source", "synthetic", "--no-prefect"), ("features", "build", "--no-prefect")):
        done = autoscalp(home, *args)
        assert done.returncode == 0, done.stderr[-2000:]
    return home


@pytest.mark.slow
def test_train_on_the_synthetic_default_registers_a_challenger(built_home, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(built_home, home)
    started = time.monotonic()
    done = autoscalp(home, "train", "--trials", "2", "--json")
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    [result] = json.loads(done.stdout)
    print(f"train: {seconds:.0f} s;", {k: round(r["oos"]["auc"], 4) for k, r in result["models"].items()},
          "ensemble", round(result["ensemble"]["oos"]["auc"], 4), result["comparison"])
    assert seconds < 600
    assert result["registered"] == {"name": "autoscalp-BTC-USDT-USDT", "version": 1, "alias": "challenger",
                                    "uri": "models:/autoscalp-BTC-USDT-USDT@challenger"}

    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # not a registry another test set process-wide
    children = client.search_runs([result["experiment_id"]], f"tags.`mlflow.parentRunId` = '{result['run_id']}'")
    assert sorted(r.info.run_name for r in children) == KINDS
    assert all(r.info.status == "FINISHED" for r in children)
    # the retrain ended with the promotion gate: version 1 is champion if it passed, else still challenger
    promotion = result["promotion"]
    assert promotion["reasons"], promotion
    alias = "champion" if promotion["promote"] else "challenger"
    assert int(client.get_model_version_by_alias("autoscalp-BTC-USDT-USDT", alias).version) == 1
    assert (home / "mlflow" / "artifacts").is_dir() and not (REPO / "mlruns").exists()

    # the table a person reads, from the same (cached) cycle: nothing new is registered
    again = autoscalp(home, "train", "--trials", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "registered autoscalp-BTC-USDT-USDT version 1" in again.stdout
    assert "ensemble" in again.stdout and "OOS AUC" in again.stdout
    assert len(model_versions(home)) == 1


@pytest.mark.slow
def test_an_unreachable_tracking_server_is_one_line_and_registers_nothing(built_home, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(built_home, home)
    done = autoscalp(home, "train", "--trials", "1", "--no-prefect", MLFLOW_TRACKING_URI="http://127.0.0.1:9")
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "http://127.0.0.1:9 is unreachable" in errors[0], done.stderr[-2000:]
    assert model_versions(home) == []


def test_ui_points_mlflow_at_the_embedded_store_on_localhost(home, monkeypatch):
    from flows.train_cli import ui_argv

    # mlflow.set_tracking_uri (called by earlier tests in this process) also exports MLFLOW_TRACKING_URI
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    argv = ui_argv(5123, None)
    assert argv[1:4] == ["-m", "mlflow", "ui"]
    assert argv[argv.index("--backend-store-uri") + 1] == f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and argv[argv.index("--port") + 1] == "5123"
    assert argv[argv.index("--default-artifact-root") + 1] == (home / "mlflow" / "artifacts").as_uri()


@pytest.mark.slow
@pytest.mark.realdata
def test_real_usdm_ticks_report_out_of_sample_auc(shared_data, tmp_path):
    home = tmp_path / "home"
    config = tmp_path / "short.yaml"
    config.write_text(short_data_yaml(REPO / "conf" / "base.yaml", training={"tuning": {"trials": 2}}))
    raw = shared_data / "binance_ws_raw"
    files = [raw / "usdm_btcusdt_20240808.gz", raw / "usdm_ethusdt_20240808.gz"]
    steps = [("ingest", "--source", "files", *[a for f in files for a in ("--path", str(f))], "--no-prefect"),
             ("features", "build", "--no-prefect"),
             ("train", "--no-prefect", "--json")]
    for args in steps:
        done = autoscalp(home, *args, "--config", str(config))
        assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    assert sorted(r["symbol"] for r in results) == ["BTC/USDT:USDT", "ETH/USDT:USDT"]
    for r in results:
        aucs = {k: m["oos"]["auc"] for k, m in r["models"].items()} | {"ensemble": r["ensemble"]["oos"]["auc"]}
        print(r["symbol"], r["split"], {k: round(v, 4) for k, v in aucs.items()}, r["comparison"])
        assert set(aucs) == {"logistic", "forest", "lstm", "xgb", "ensemble"}
        assert r["registered"]["version"] == 1

    # the retrain ended with the promotion gate: decided (either way) on data after the fit, reasons given
    for r in results:
        promotion = r["promotion"]
        assert promotion["reasons"] and isinstance(promotion["promote"], bool), promotion
        print(r["symbol"], "promotion:", promotion["promote"], promotion["reasons"])

    # a backtest of version 1 on the real BTCUSDT ticks, twice: the same trades, a report that opens
    reports, hashes = [], []
    for n in (1, 2):
        report = tmp_path / f"report{n}.html"
        done = autoscalp(home, "backtest", "--config", str(config), "--symbol", "BTC/USDT:USDT", "--model", "1",
                         "--report", str(report), "--json")  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        out = json.loads(done.stdout)
        hashes.append(out["provenance"]["trade_list_hash"])
        reports.append(report.read_text())
    assert hashes[0] == hashes[1] and len(hashes[0]) == 64
    # by default only the data after the version's fit (its held-back block and later): ~1.4 minutes here
    assert out["provenance"]["model"]["version"] == 1 and out["provenance"]["events"] > 10_000
    assert set(out["baselines"]) == {"no-model", "flat"} and out["mlflow_run_id"]
    assert_report_opens(reports[0])


def assert_report_opens(html: str) -> None:
    """Well-formed enough for a browser: balanced tags, embedded images, the summary's headings."""
    from html.parser import HTMLParser

    class Parser(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.stack: list[str] = []
            self.images = 0

        def handle_starttag(self, tag, attrs):  # noqa: ANN001
            if tag == "img":
                self.images += dict(attrs).get("src", "").startswith("data:image/png;base64,")
            elif tag not in ("meta", "br", "hr", "link", "input"):
                self.stack.append(tag)

        def handle_endtag(self, tag):  # noqa: ANN001
            assert self.stack and self.stack.pop() == tag, f"unbalanced </{tag}>"

    parser = Parser()
    parser.feed(html)
    parser.close()
    assert not parser.stack and parser.images >= 4
    assert "net" in html.lower() and "drawdown" in html.lower()
