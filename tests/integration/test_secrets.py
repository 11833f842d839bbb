"""A configured API key never appears in any log line, metric, MLflow param or exception text (issue 7).

The exchange keys are set in the environment (``AUTOSCALP_API_KEY`` / ``AUTOSCALP_API_SECRET``, as
``pipeline.config.Credentials`` reads them) to values found nowhere else, and the product is run as a
user runs it, in real processes on one home: ingest (synthetic), features, a one-trial train, a
backtest, a short ``serve`` whose /health and /metrics are scraped and whose control endpoint is
used, an exchange source that fails offline (ccxt NetworkError), and the live broker twice: refused
without ``serve.live_confirmed``, then failing offline with it. ccxt's requests go to a dead proxy
(``ccxt.Exchange.https_proxy``, set before the CLI starts: ccxt ignores the proxy variables), so the
failures are the same on a machine with internet access. The exchange source and the live
broker are then called in this process too, with every logger at DEBUG (ccxt logs each request
with its headers there) and their exceptions formatted with their tracebacks.

Searched for the two values (and the control token): every line of output, every log record, the
exception texts, every MLflow param, tag and metric name, and every file under the home as bytes
(the MLflow database and artefacts, the journals, the paper venue, the stores, Prefect's and
Optuna's files).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .short_data import short_data_yaml

REPO = Path(__file__).resolve().parents[2]
SYMBOL = "BTC/USDT:USDT"
API_KEY = "akQ7zXv93LmT0pAwEkeyN4cR8sYdJ2hU"
API_SECRET = "scZ1sEcReTwq8Ny5tHv3Bm7Xk0Pd2Lf9"
CONTROL_TOKEN = "ctL5tOkEnm3Vq7Rz1Wx9Kp4Hs6Gd8Jy2"
SECRETS = {"API key": API_KEY, "API secret": API_SECRET, "control token": CONTROL_TOKEN}
DEAD_PROXY = "http://127.0.0.1:9"
# `python -m flows` with every ccxt request sent to the dead proxy
OFFLINE_CLI = f"import ccxt; ccxt.Exchange.https_proxy = {DEAD_PROXY!r}; from flows.cli import main; main()"
OFFLINE_CONFIG = """\
exchange:
  timeout_ms: 2000
  max_retries: 1
  backoff_s: 0.1
  backoff_max_s: 0.2
sources:
  exchange:
    duration_s: 2
serve:
  http_port: 0
"""
# The product's steps on a small market (30k ticks, short labels, one trial): the point is where the
# keys could leak, not the model.
SMALL_MARKET_CONFIG = short_data_yaml(sources={"synthetic": {"ticks": 30000}})
pytestmark = pytest.mark.slow


def leaks(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [name for name, value in SECRETS.items() if value.encode() in data]


def product_env(home: Path) -> dict[str, str]:
    env = {**os.environ, "AUTOSCALP_HOME": str(home), "AUTOSCALP_API_KEY": API_KEY, "AUTOSCALP_API_SECRET": API_SECRET,
           "AUTOSCALP_CONTROL_TOKEN": CONTROL_TOKEN}  # fmt: skip
    for key in ("AUTOSCALP_CONFIG", "MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME"):
        env.pop(key, None)
    return env


def autoscalp(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", OFFLINE_CLI, *args], capture_output=True, text=True,
                          env=product_env(home), cwd=REPO, timeout=300)  # fmt: skip


def get(url: str, data: bytes | None = None, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # straight to 127.0.0.1
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def serve_and_scrape(home: Path, config: Path) -> tuple[str, list[str]]:
    """A short paper ``serve``; returns its output and what its HTTP endpoints answered."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-c", OFFLINE_CLI, "serve", "--config", str(config), "--feed", "synthetic",
         "--speed", "0", "--duration", "6",
         "--http-port", "0", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=product_env(home), cwd=REPO,
    )  # fmt: skip
    lines, answers = [], []
    for line in proc.stdout:
        lines.append(line)
        found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if found:
            url = f"http://127.0.0.1:{found.group(1)}"
            break
    else:
        pytest.fail("serve printed no address:\n" + "".join(lines))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, health = get(f"{url}/health")
        if status == 200 and json.loads(health).get("ticks"):
            break
        time.sleep(0.2)
    answers += [health, get(f"{url}/metrics")[1]]
    answers.append(get(f"{url}/control/pause", b"", token="wrong")[1])  # refused, and logged as refused
    status, paused = get(f"{url}/control/pause", b"", token=CONTROL_TOKEN)
    assert status == 202, paused
    answers.append(paused)
    answers.append(get(f"{url}/health")[1])
    lines += proc.stdout.readlines()
    assert proc.wait(60) == 0, "".join(lines)
    return "".join(lines), answers


def in_process_failures(home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> list[str]:
    """The exchange source and the live broker in this process, every logger at DEBUG; returns the
    exception texts with their tracebacks."""
    import ccxt

    from flows.config import ProductConfig
    from pipeline.data.sources import build_source, plan_sources
    from serving.daemon.build import build_broker, market_limits

    for key, value in product_env(home).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(ccxt.Exchange, "https_proxy", DEAD_PROXY)
    config = ProductConfig.model_validate({
        "exchange": {"timeout_ms": 2000, "max_retries": 1, "backoff_s": 0.1, "backoff_max_s": 0.2},
        "sources": {"exchange": {"duration_s": 2}},
        "serve": {"live_confirmed": True, "broker": "live"},
    })  # fmt: skip
    texts = []
    caplog.set_level("DEBUG")
    [spec] = plan_sources(config, "exchange", symbols=(SYMBOL,))
    source = build_source(spec, config)
    with pytest.raises(Exception) as failed:
        next(iter(source.batches()))
    texts.append("".join(traceback.format_exception(failed.value)) + repr(failed.value))
    limits = market_limits(SYMBOL, config.backtest, config.venue)
    with pytest.raises(Exception) as failed:
        build_broker(config, config.serve, SYMBOL, limits, home)
    texts.append("".join(traceback.format_exception(failed.value)) + repr(failed.value))
    assert all("NetworkError" in t for t in texts), texts  # both got as far as the network
    return texts


def mlflow_names(home: Path) -> str:
    """Every param, tag and metric of every run, and every registered model's and version's tags."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # not a registry another test set process-wide
    out = []
    experiments = client.search_experiments()
    for run in client.search_runs([e.experiment_id for e in experiments]):
        out += [f"{k}={v}" for k, v in {**run.data.params, **run.data.tags}.items()] + list(run.data.metrics)
    for model in client.search_registered_models():
        out += [f"{k}={v}" for k, v in model.tags.items()]
        for version in client.search_model_versions(f"name = '{model.name}'"):
            out += [f"{k}={v}" for k, v in version.tags.items()] + [version.source or ""]
    assert len(out) > 20, out  # the train and the backtest logged their runs
    return "\n".join(out)


def test_the_api_key_never_appears(tmp_path, monkeypatch, caplog):
    home = tmp_path / "home"
    offline = tmp_path / "offline.yaml"
    offline.write_text(OFFLINE_CONFIG)
    confirmed = tmp_path / "live.yaml"
    confirmed.write_text(OFFLINE_CONFIG + "  live_confirmed: true\n")
    small = tmp_path / "small.yaml"
    small.write_text(SMALL_MARKET_CONFIG)
    outputs: dict[str, str] = {}
    started = time.monotonic()

    steps = {
        "ingest": (0, ["ingest", "--source", "synthetic", "--no-prefect", "--config", str(small)]),
        "features": (0, ["features", "build", "--no-prefect", "--config", str(small)]),
        "train": (0, ["train", "--trials", "1", "--no-prefect", "--json", "--config", str(small)]),
        "backtest": (0, ["backtest", "--model", "latest", "--report", str(home / "report.html"), "--json",
                     "--config", str(small)]),
        "exchange source": (2, ["ingest", "--source", "exchange", "--no-prefect", "--config", str(offline)]),
        "live refused": (2, ["serve", "--broker", "live", "--duration", "2", "--config", str(offline)]),
        "live offline": (2, ["serve", "--broker", "live", "--duration", "2", "--config", str(confirmed)]),
    }
    for name, (code, args) in steps.items():
        if name == "exchange source":  # after the backtest: serve on the trained champion first
            outputs["serve"], answers = serve_and_scrape(home, small)
            outputs["serve http"] = "\n".join(answers)
        done = autoscalp(home, *args)
        outputs[name] = done.stdout + done.stderr
        assert done.returncode == code, f"{name}: {done.returncode}\n{outputs[name][-3000:]}"
    assert "live_confirmed" in outputs["live refused"], outputs["live refused"]
    assert "NetworkError" in outputs["exchange source"] and "NetworkError" in outputs["live offline"], outputs
    assert "autoscalp_" in outputs["serve http"] and "pause" in outputs["serve http"], outputs["serve http"]

    texts = in_process_failures(home, monkeypatch, caplog)
    outputs["in-process exceptions"] = "\n".join(texts)
    outputs["in-process log records"] = "\n".join(
        f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records
    )
    assert any(r.levelname == "DEBUG" for r in caplog.records)  # DEBUG was on
    outputs["mlflow"] = mlflow_names(home)

    found = {name: leaks(text) for name, text in outputs.items() if leaks(text)}
    files = [p for p in home.rglob("*") if p.is_file()]
    found |= {str(p.relative_to(home)): leaks(p.read_bytes()) for p in files if leaks(p.read_bytes())}
    print(f"\nsecrets: {len(outputs)} outputs, {len(files)} files under the home, "
          f"{sum(p.stat().st_size for p in files) / 1e6:.0f} MB, in {time.monotonic() - started:.0f} s")  # fmt: skip
    assert not found, found
    names = {p.name for p in files}
    assert {"mlflow.db", f"daemon-{SYMBOL.replace('/', '-').replace(':', '-')}.sqlite"} <= names, sorted(names)
