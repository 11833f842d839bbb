"""Champion / challenger / previous-champion moves on a real MLflow registry (SQLite)."""

from __future__ import annotations

import pytest

from pipeline.config import TrackingConfig
from pipeline.training import aliases, tracking
from pipeline.training.registry import CHALLENGER, model_name

SYMBOL = "BTC/USDT:USDT"
NAME = model_name(SYMBOL)


@pytest.fixture()
def registry(home, tmp_path):
    """A registered model with three versions (bare artefact directories: only aliases matter here)."""
    from mlflow import MlflowClient

    tracking.connect(TrackingConfig())
    client = MlflowClient()
    client.create_registered_model(NAME)
    source = tmp_path / "model"
    source.mkdir()
    for _ in range(3):
        client.create_model_version(NAME, str(source), tags={"autoscalp.fit_end_ns": "123"})
    return client


def champion(client) -> int:
    return int(client.get_model_version_by_alias(NAME, aliases.CHAMPION).version)


def alias_or_none(client, alias: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        return int(client.get_model_version_by_alias(NAME, alias).version)
    except MlflowException:
        return None


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("champion", (NAME, "champion", None)),
        ("@challenger", (NAME, "challenger", None)),
        ("7", (NAME, None, 7)),
        ("models:/autoscalp-ETH-USDT-USDT@champion", ("autoscalp-ETH-USDT-USDT", "champion", None)),
        ("models:/other/3", ("other", None, 3)),
    ],
)
def test_parse_ref(ref, expected):
    assert aliases.parse_ref(SYMBOL, ref) == expected


def test_parse_ref_rejects_garbage():
    with pytest.raises(aliases.ModelRefError, match="not an alias"):
        aliases.parse_ref(SYMBOL, "champ ion!")


def test_resolve_names_what_is_missing(registry):
    with pytest.raises(aliases.ModelRefError, match="no alias @champion"):
        aliases.resolve(SYMBOL, "champion")
    with pytest.raises(aliases.ModelRefError, match="no version 9"):
        aliases.resolve(SYMBOL, "9")
    assert aliases.resolve(SYMBOL, "latest").version == 3
    info = aliases.resolve(SYMBOL, "2")
    assert (info.version, info.tag_int("autoscalp.fit_end_ns"), info.uri) == (2, 123, f"models:/{NAME}/2")


def test_first_promotion_has_no_previous(registry):
    assert aliases.promote(NAME, 1) is None
    assert champion(registry) == 1
    assert alias_or_none(registry, aliases.PREVIOUS) is None
    assert aliases.history(NAME) == [1]


def test_promotion_keeps_the_previous_and_drops_the_challenger_alias(registry):
    aliases.promote(NAME, 1)
    registry.set_registered_model_alias(NAME, CHALLENGER, "2")
    assert aliases.promote(NAME, 2) == 1
    assert (champion(registry), alias_or_none(registry, aliases.PREVIOUS)) == (2, 1)
    assert alias_or_none(registry, CHALLENGER) is None
    assert aliases.history(NAME) == [1, 2]


def test_rollback_restores_the_previous_version_and_can_go_back_twice(registry):
    for version in (1, 2, 3):
        aliases.promote(NAME, version)
    assert aliases.rollback(NAME) == (3, 2)
    assert (champion(registry), alias_or_none(registry, aliases.PREVIOUS)) == (2, 1)
    assert registry.get_model_version(NAME, "3").tags["autoscalp.rolled_back"] == "true"
    assert aliases.rollback(NAME) == (2, 1)
    assert (champion(registry), alias_or_none(registry, aliases.PREVIOUS)) == (1, None)
    with pytest.raises(aliases.ModelRefError, match="roll back"):
        aliases.rollback(NAME)
    assert champion(registry) == 1


def test_a_failure_in_the_middle_never_leaves_the_registry_without_a_champion(registry, monkeypatch):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    aliases.promote(NAME, 1)
    real = MlflowClient.set_registered_model_alias

    def failing(self, name, alias, version):
        if alias == aliases.CHAMPION:
            raise MlflowException("the store went away")
        return real(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", failing)
    with pytest.raises(MlflowException):
        aliases.promote(NAME, 2)
    monkeypatch.undo()
    assert champion(registry) == 1
    assert aliases.history(NAME) == [1]
