"""Where a new experiment keeps its artefacts: never ./mlruns of whatever directory a command ran in."""

from __future__ import annotations

import mlflow
import pytest

from pipeline.config import TrackingConfig
from pipeline.training.tracking import connect, experiment_artifact_location


@pytest.mark.parametrize("uri", ["sqlite:////tmp/x/mlflow.db", "postgresql://autoscalp@db:5432/mlflow"])
def test_a_database_reached_directly_keeps_artefacts_under_the_home(home, uri):
    assert experiment_artifact_location(uri, TrackingConfig()) == (home / "mlflow" / "artifacts").as_uri()


def test_a_tracking_server_decides_unless_a_location_is_configured(home):
    assert experiment_artifact_location("http://mlflow:5000", TrackingConfig()) is None
    s3 = TrackingConfig(artifact_location="s3://bucket/autoscalp")
    assert experiment_artifact_location("http://mlflow:5000", s3) == "s3://bucket/autoscalp"
    assert experiment_artifact_location("postgresql://u@db/mlflow", s3) == "s3://bucket/autoscalp"


def test_a_configured_location_is_set_on_the_new_experiment(home, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    shared = tmp_path / "shared-artifacts"
    uri = f"sqlite:///{tmp_path / 'other.db'}"
    _, experiment_id = connect(TrackingConfig(uri=uri, artifact_location=shared.as_uri()))
    assert mlflow.MlflowClient(uri, uri).get_experiment(experiment_id).artifact_location == shared.as_uri()
    assert shared.is_dir()
