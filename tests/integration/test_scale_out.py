"""Scale-out by configuration only, as far as one machine shows it (conf/DEPLOYMENT.md):

- a retrain deployment on a Prefect work pool, run by `prefect worker start` (a real server and a
  real process worker), fanning features and per-symbol trainings out on Dask, with MLflow tracking,
  the model registry and Optuna's studies on a real PostgreSQL server (tests/integration/conftest.py);
  the feature days built on the Dask LocalCluster are the same rows, and select the same features,
  as a sequential in-process build;
- two Optuna worker processes sharing one study on PostgreSQL, both contributing trials.

Nothing but YAML changes between these and the single-machine default. Slow: a Prefect server, a
worker, Dask clusters and four model kinds on two tiny symbols (~100 s together on 2 cores).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.config import QualityConfig, SyntheticSourceConfig
from pipeline.data.ingest import ingest
from pipeline.data.sources.synthetic import SyntheticSource
from pipeline.data.store import TickStore

pytestmark = pytest.mark.slow

_spec = importlib.util.spec_from_file_location("_ingest_server", Path(__file__).with_name("test_ingest_flow_server.py"))
_server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_server)
REPO, free_port, wait_healthy = _server.REPO, _server.free_port, _server.wait_healthy

SYMBOLS = ("BTC/USDT:USDT", "ETH/USDT:USDT")
POOL = "autoscalp-test-pool"
# Two tiny symbols (~5,000 rows each) and small budgets: the point is where things run, not the models.
TINY = {
    "symbols": list(SYMBOLS),
    "features": {"sampling": {"stride": 4}, "selection": {"count": 8, "folds": 2},
                 "warmup_budget": {"quotes": 400, "trades": 200, "events": 1500, "seconds": 20.0, "moves": 150,
                                   "depth": 500}},
    "training": {"walk_forward": {"folds": 2, "min_train_rows": 200}, "tuning": {"trials": 1}},
    "promotion": {"after_retrain": False},
}


def write_config(path: Path, **sections: dict) -> Path:
    """conf/base.yaml, the tiny settings, then ``sections`` (merged one level deep)."""
    raw = {key: dict(value) if isinstance(value, dict) else value for key, value in TINY.items()}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    path.write_text(yaml.safe_dump({"extends": str(REPO / "conf" / "base.yaml"), **raw}))
    return path


def tiny_store(home: Path) -> None:
    source = SyntheticSource(SyntheticSourceConfig(ticks=30_000, start=datetime(2024, 1, 1, tzinfo=timezone.utc)),
                             SYMBOLS)
    ingest(source, TickStore(home / "store"), QualityConfig())


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "AUTOSCALP_HOME": str(tmp_path / "home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1", **extra}
    for key in ("AUTOSCALP_CONFIG", "MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
        if key not in extra:
            env.pop(key, None)
    return env


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory) -> str:
    """A Prefect server on a free port of 127.0.0.1 for this module."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_healthy(api, server)
        yield api
    finally:
        server.terminate()
        server.wait(timeout=30)


def post(url: str, body: dict | None = None) -> list | dict:
    """POST (or GET without a body) to the Prefect API; a 503 (its SQLite database busy on a loaded
    machine) is retried for up to a minute."""
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or time.monotonic() > deadline:
                raise
            time.sleep(1)


def get(url: str) -> dict:
    return post(url)


def test_a_retrain_deployment_runs_on_a_process_worker_with_dask_and_postgresql(postgres, prefect_api, tmp_path):
    mlflow_url, optuna_url = postgres.create_database("mlflow"), postgres.create_database("optuna")
    home = tmp_path / "home"
    tiny_store(home)
    config = write_config(
        tmp_path / "scale-out.yaml",
        training={"tracking": {"uri": mlflow_url}, "tuning": {"trials": 1, "storage": optuna_url}},
        schedule={"work_pool": POOL, "retrain_every_hours": 1000.0},
        runner={"kind": "dask", "n_workers": 2},
    )
    env = env_for(tmp_path, PREFECT_API_URL=prefect_api)

    deployed = subprocess.run([sys.executable, "-m", "flows", "schedule", "--config", str(config)], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=120)
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    assert f"work pool {POOL!r}" in deployed.stdout
    deployments = {d["name"]: d for d in post(f"{prefect_api}/deployments/filter", {"limit": 10})}
    assert set(deployments) == {"ingest", "retrain"}
    assert deployments["retrain"]["work_pool_name"] == POOL
    assert deployments["retrain"]["entrypoint"] == "flows.retrain.retrain_flow"  # the installed package, no checkout

    worker_log = tmp_path / "worker.log"
    worker = subprocess.Popen(  # the worker's cwd and environment are its machine's: not the repository
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--type", "process", "--limit", "1"],
        env=env, cwd=tmp_path, stdout=worker_log.open("w"), stderr=subprocess.STDOUT,
    )
    try:
        run = post(f"{prefect_api}/deployments/{deployments['retrain']['id']}/create_flow_run", {})
        deadline, state = time.monotonic() + 240, None
        while time.monotonic() < deadline:
            assert worker.poll() is None, worker_log.read_text()[-3000:]
            state = get(f"{prefect_api}/flow_runs/{run['id']}")["state_type"]
            if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            time.sleep(2)
        assert state == "COMPLETED", f"flow run {state}: {worker_log.read_text()[-4000:]}"
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    # the run and its features subflow: feature days and trainings ran on the Dask workers and reported
    # to the same server
    runs = [run["id"]] + [r["id"] for r in post(f"{prefect_api}/flow_runs/filter", {
        "flow_runs": {"parent_flow_run_id": {"any_": [run["id"]]}}, "limit": 10})]
    tasks = post(f"{prefect_api}/task_runs/filter", {"flow_runs": {"id": {"any_": runs}}, "limit": 50})
    names = sorted(t["name"] for t in tasks if t["state_type"] == "COMPLETED")
    assert [n for n in names if n.startswith("train ")] == ["train BTC/USDT:USDT", "train ETH/USDT:USDT"], names
    assert sum(n.startswith("features ") for n in names) == 2, names

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)
    for name in ("autoscalp-BTC-USDT-USDT", "autoscalp-ETH-USDT-USDT"):
        version = client.get_model_version_by_alias(name, "challenger")
        assert int(version.version) == 1
        # artefacts under the worker's AUTOSCALP_HOME (shared storage or s3:// on several machines)
        assert client.get_run(version.run_id).info.artifact_uri.startswith((home / "mlflow" / "artifacts").as_uri())
    experiment = client.get_experiment_by_name("autoscalp")
    assert experiment.artifact_location == (home / "mlflow" / "artifacts").as_uri()  # not ./mlruns of the worker
    runs = Counter(r.info.run_name for r in client.search_runs([experiment.experiment_id], max_results=1000))
    assert all(runs[kind] == 2 for kind in ("ensemble", "forest", "logistic", "lstm", "xgb")), runs  # per symbol

    import optuna

    studies = optuna.get_all_study_summaries(optuna_url)
    assert len(studies) == 2 * 4 and all(s.n_trials == 1 for s in studies)
    # nothing fell back to the embedded SQLite stores
    assert not (home / "mlflow" / "mlflow.db").exists() and not (home / "optuna").exists()
    assert not (tmp_path / "mlruns").exists() and not (REPO / "mlruns").exists()

    # the feature days built on Dask equal a sequential in-process build of the same ticks
    sequential = write_config(tmp_path / "sequential.yaml",
                              features={**TINY["features"], "store_dir": str(tmp_path / "sequential")})
    done = subprocess.run([sys.executable, "-m", "flows", "features", "build", "--no-prefect", "--json", "--config",
                           str(sequential)], env=env_for(tmp_path), cwd=REPO, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert [p["reused"] for p in report["partitions"]] == [False, False]  # built here, not read back
    dask_built = json.loads((home / "features" / "selection.json").read_text())
    assert report["selection"]["names"] == dask_built["names"]
    assert_same_rows(home / "features" / "datasets", tmp_path / "sequential" / "datasets")


def assert_same_rows(left: Path, right: Path) -> None:
    """The same partitions (symbol, day, fingerprint) with bit-identical rows."""
    files = sorted(f.relative_to(left) for f in left.rglob("*.parquet"))
    assert len(files) == 2 and files == sorted(f.relative_to(right) for f in right.rglob("*.parquet"))
    for name in files:
        pd.testing.assert_frame_equal(pd.read_parquet(left / name), pd.read_parquet(right / name), check_exact=True)


def test_two_optuna_workers_share_one_study_on_postgresql(postgres, tmp_path):
    import optuna

    url = postgres.create_database("optuna_two_workers")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    ready = tmp_path / "ready"
    ready.mkdir()
    env = env_for(tmp_path)
    workers = [subprocess.Popen([sys.executable, str(script), url, str(n), str(ready)], env=env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in (0, 1)]
    outputs = [worker.communicate(timeout=180) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), [err[-2000:] for _, err in outputs]
    study = optuna.load_study(study_name="shared", storage=url)
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    # the budget is the study's, not each worker's (16): a worker may start one trial as the other ends
    assert 8 <= len(trials) <= 9, len(trials)
    by_worker = {t.user_attrs["worker"] for t in trials}
    assert len(by_worker) == 2, by_worker  # both processes contributed


WORKER = """\
import sys, time
from pathlib import Path
import numpy as np
import optuna
from pipeline.config import TrainingConfig, TuningConfig
from pipeline.training.splits import purged_walk_forward
from pipeline.training.tuning import tune

url, worker, ready = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
optuna.logging.set_verbosity(optuna.logging.WARNING)
rng = np.random.default_rng(5)
X = rng.normal(size=(2400, 4))
y = (rng.random(2400) < 1 / (1 + np.exp(-(X[:, 0] - X[:, 1])))).astype(np.int64)
ts = np.arange(2400, dtype=np.int64) * 1_000_000_000
ends = ts + 30_000_000_000
folds = purged_walk_forward(ts, folds=2, label_end_ns=ends)
(ready / str(worker)).touch()
deadline = time.monotonic() + 120
while len(list(ready.iterdir())) < 2 and time.monotonic() < deadline:  # start together
    time.sleep(0.05)
config = TrainingConfig(tuning=TuningConfig(trials=8, storage=url))
print(tune("logistic", X, y, ts, ends, folds, config, study_name="shared", worker=worker).trials)
"""
