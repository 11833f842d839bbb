"""The registry's aliases as the product uses them: which version is ``champion`` (trades),
``challenger`` (newest, awaiting promotion) and ``previous-champion`` (what a rollback returns to),
and resolving what a user types (``champion``, ``@challenger``, ``7``, ``latest`` (the newest
version), ``models:/name@alias``, ``models:/name/7``) to one version.

Moves are ordered so that a failure at any point leaves a champion in place: the old champion is
first remembered as ``previous-champion``, then ``champion`` is pointed at the new version in one
registry call (MLflow overwrites an alias atomically). The registered model's tag
``autoscalp.champion_history`` lists the champions in order, so rollback can go back more than once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.errors import AutoscalpError
from pipeline.training.registry import CHALLENGER, model_name

CHAMPION = "champion"
LATEST = "latest"  # not an alias: the highest version number
PREVIOUS = "previous-champion"
HISTORY_TAG = "autoscalp.champion_history"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w.-]+)|/(?P<version>\d+))$")


class ModelRefError(AutoscalpError):
    """A model reference that names no registered version."""


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: int
    aliases: tuple[str, ...]
    tags: dict
    run_id: str
    created_ms: int | None = None  # the version's creation time (epoch ms): the model's age counts from it

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def tag_int(self, key: str) -> int | None:
        value = self.tags.get(key)
        return int(value) if value not in (None, "") else None


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def parse_ref(symbol: str, ref: str) -> tuple[str, str | None, int | None]:
    """(registered name, alias, version) from what a user typed."""
    match = _URI.match(ref)
    if match:
        version = match["version"]
        return match["name"], match["alias"], int(version) if version else None
    ref = ref.lstrip("@")
    if ref.isdigit():
        return model_name(symbol), None, int(ref)
    if not re.fullmatch(r"[\w.-]+", ref):
        raise ModelRefError(f"model reference {ref!r} is not an alias, a version number or a models:/ URI")
    return model_name(symbol), ref, None


def resolve(symbol: str, ref: str) -> VersionInfo:
    """The version ``ref`` names; ``ModelRefError`` naming what is missing otherwise."""
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_ref(symbol, ref)
    client = _client()
    if alias == LATEST:
        return _latest(client, name)
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, str(version))
    except MlflowException:
        what = f"alias @{alias}" if alias else f"version {version}"
        raise ModelRefError(f"{name} has no {what} in the registry") from None
    return _info(mv)


def _latest(client, name: str) -> VersionInfo:  # noqa: ANN001
    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        raise ModelRefError(f"{name} has no version in the registry; run `autoscalp train`")
    mv = max(versions, key=lambda v: int(v.version))
    mv = client.get_model_version(name, mv.version)  # search results carry no aliases
    return _info(mv)


def _info(mv) -> VersionInfo:  # noqa: ANN001 (MLflow's ModelVersion)
    created = int(mv.creation_timestamp) if mv.creation_timestamp is not None else None
    return VersionInfo(mv.name, int(mv.version), tuple(mv.aliases or ()), dict(mv.tags or {}), mv.run_id or "", created)


def find(symbol: str, alias: str) -> VersionInfo | None:
    try:
        return resolve(symbol, alias)
    except ModelRefError:
        return None


def load_ensemble(info: VersionInfo):  # noqa: ANN201 (pipeline.models.ensemble.Ensemble)
    """The registered ensemble, loaded through its MLflow pyfunc (no pickles)."""
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(info.uri).unwrap_python_model().ensemble


def history(name: str) -> list[int]:
    tags = _client().get_registered_model(name).tags or {}
    return [int(v) for v in tags.get(HISTORY_TAG, "").split(",") if v]


def promote(name: str, version: int) -> int | None:
    """Point ``champion`` at ``version``; the one it replaces (returned) becomes ``previous-champion``."""
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        old = int(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        old = None
    if old == version:
        return old
    if old is not None:
        client.set_registered_model_alias(name, PREVIOUS, str(old))
    client.set_registered_model_alias(name, CHAMPION, str(version))  # the one step that switches
    past = history(name) or ([old] if old is not None else [])
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(str(v) for v in [*past, version]))
    try:
        if int(client.get_model_version_by_alias(name, CHALLENGER).version) == version:
            client.delete_registered_model_alias(name, CHALLENGER)
    except MlflowException:
        pass
    return old


def rollback(name: str) -> tuple[int, int]:
    """Move ``champion`` back to ``previous-champion``; returns (from, to)."""
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        current = int(client.get_model_version_by_alias(name, CHAMPION).version)
        previous = int(client.get_model_version_by_alias(name, PREVIOUS).version)
    except MlflowException:
        raise ModelRefError(f"{name} has no champion and previous-champion to roll back between") from None
    client.set_registered_model_alias(name, CHAMPION, str(previous))
    past = history(name)
    while past and past[-1] != previous:  # drop the rolled-back champion(s) from the history
        past.pop()
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(str(v) for v in past))
    earlier = past[-2] if len(past) >= 2 else None
    if earlier is not None:
        client.set_registered_model_alias(name, PREVIOUS, str(earlier))
    else:
        client.delete_registered_model_alias(name, PREVIOUS)
    client.set_model_version_tag(name, str(current), "autoscalp.rolled_back", "true")
    return current, previous
