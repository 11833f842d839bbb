"""`autoscalp doctor`: a healthy installation passes; a broken config, an unwritable home, missing
live keys, an unreachable Prefect API or a corrupt MLflow store fail with what to fix, exit code 1,
and an exchange key's value never appears in the output."""

from __future__ import annotations

import json
import socket

import pytest
from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()
KEY_VALUE = "sk-live-9f8e7d6c5b4a-DO-NOT-PRINT"
SECRET_VALUE = "whsec-0a1b2c3d4e5f-NEVER-SHOWN"


@pytest.fixture()
def clean_env(home, monkeypatch):
    for name in ("PREFECT_API_URL", "AUTOSCALP_CONFIG", "AUTOSCALP_SHARED_DATA", "AUTOSCALP_API_KEY",
                 "AUTOSCALP_API_SECRET", "AUTOSCALP_BINANCEUSDM_API_KEY", "AUTOSCALP_BINANCEUSDM_API_SECRET"):
        monkeypatch.delenv(name, raising=False)
    return home


def doctor(*args: str) -> tuple[int, dict[str, dict], str]:
    result = runner.invoke(app, ["doctor", "--json", *args])
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    plain = runner.invoke(app, ["doctor", *args])
    assert plain.exit_code == result.exit_code
    return result.exit_code, checks, result.stdout + plain.output


def test_a_healthy_installation_passes(clean_env):
    code, checks, _ = doctor()
    assert code == 0, checks
    assert {"python", "packages", "AUTOSCALP_HOME", "config", "mlflow", "credentials", "prefect", "numba cache",
            "shared data"} <= set(checks)
    assert all(c["status"] in ("ok", "warn") for c in checks.values()), checks
    assert "not created yet" in checks["mlflow"]["detail"] and not (clean_env / "mlflow").exists()


def test_a_broken_config_fails_naming_the_key(clean_env, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("serve:\n  http_port: 99999\n")
    code, checks, output = doctor("--config", str(path))
    assert code == 1
    assert checks["config"]["status"] == "fail" and "serve.http_port" in checks["config"]["detail"]
    assert "config reference" in checks["config"]["fix"]
    assert "mlflow" not in checks  # the checks that need the config are skipped, not crashed
    assert "1 fail(s)" in output


def test_an_unwritable_home_fails(clean_env, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("AUTOSCALP_HOME", str(blocker / "home"))  # root can write anywhere, but not under a file
    code, checks, _ = doctor()
    assert code == 1
    home = checks["AUTOSCALP_HOME"]
    assert home["status"] == "fail" and "is a file, not a directory" in home["detail"]
    assert "AUTOSCALP_HOME" in home["fix"]


def test_live_mode_without_the_secret_fails_and_never_prints_the_key(clean_env, monkeypatch):
    monkeypatch.setenv("AUTOSCALP_API_KEY", KEY_VALUE)
    code, checks, output = doctor("--live")
    assert code == 1
    creds = checks["credentials"]
    assert creds["status"] == "fail" and "API secret missing" in creds["detail"]
    assert "AUTOSCALP_BINANCEUSDM_API_KEY" in creds["fix"]
    assert KEY_VALUE not in output and KEY_VALUE[:12] not in output

    monkeypatch.setenv("AUTOSCALP_BINANCEUSDM_API_SECRET", SECRET_VALUE)
    code, checks, output = doctor("--live")
    assert checks["credentials"]["status"] == "ok", checks["credentials"]
    assert KEY_VALUE not in output and SECRET_VALUE not in output and SECRET_VALUE[:12] not in output

    code, checks, _ = doctor()  # paper: keys are not needed, and still not shown
    assert checks["credentials"]["status"] == "ok" and "paper" in checks["credentials"]["detail"]


def test_an_unreachable_prefect_api_and_a_missing_shared_dir_fail(clean_env, tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{port}/api")
    monkeypatch.setenv("AUTOSCALP_SHARED_DATA", str(tmp_path / "nowhere"))
    code, checks, _ = doctor()
    assert code == 1
    assert checks["prefect"]["status"] == "fail" and "does not answer" in checks["prefect"]["detail"]
    assert checks["shared data"]["status"] == "fail"


def test_a_corrupt_mlflow_store_fails(clean_env):
    store = clean_env / "mlflow" / "mlflow.db"
    store.parent.mkdir(parents=True)
    store.write_bytes(b"this is not an SQLite database" * 100)
    code, checks, _ = doctor()
    assert code == 1
    assert checks["mlflow"]["status"] == "fail" and str(store) in checks["mlflow"]["detail"]
