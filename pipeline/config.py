"""Typed, frozen configuration loaded from YAML in ``conf/``.

Defaults are embedded in the models, so the product runs with no file at all. A YAML file may
``extends: base.yaml`` (a path relative to itself) and overrides only what it names. Unknown keys,
wrong types and secrets in YAML fail fast with the file, the key and the reason on one line.
Exchange credentials come from the environment only (see ``Credentials``).
"""

from __future__ import annotations

import difflib
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from pipeline.errors import ConfigError

CONFIG_ENV = "AUTOSCALP_CONFIG"
UNIFIED_SYMBOL = re.compile(r"^[A-Z0-9]+/[A-Z0-9]+(:[A-Z0-9]+)?$")
SECRET_KEYS = {"api_key", "apikey", "secret", "api_secret", "password", "passphrase", "private_key"}
URL_PASSWORD = re.compile(r"^[A-Za-z0-9+.-]+://[^/@:]*:[^/@]*@")


class SecretInConfigError(ValueError):
    """A secret found in a config value (reported without the value)."""


def no_password_in_url(url: str | None) -> str | None:
    """URLs in config files name the user and host only: the password comes from the environment
    (PGPASSWORD or ~/.pgpass for PostgreSQL, which libpq reads itself; MLflow's own variables)."""
    if url and URL_PASSWORD.match(url):
        raise SecretInConfigError("the URL holds a password: secrets are never read from config files; leave it out and "
                         "set PGPASSWORD or ~/.pgpass (PostgreSQL), MLFLOW_TRACKING_PASSWORD (a tracking server)")
    return url


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ExchangeConfig(Frozen):
    id: str = Field("binanceusdm", description="ccxt exchange id (binanceusdm = Binance USD-M futures)")
    testnet: bool = Field(False, description="use the exchange sandbox URLs")
    timeout_ms: int = Field(10_000, gt=0)
    max_retries: int = Field(5, ge=0, description="retries of a failed REST call or stream")
    backoff_s: float = Field(1.0, gt=0, description="first retry delay, doubled each retry")
    backoff_max_s: float = Field(30.0, gt=0)


class SyntheticSourceConfig(Frozen):
    seed: int = 7
    ticks: int = Field(200_000, gt=0, description="trade + quote events per symbol")
    start: datetime = datetime(2024, 1, 1, tzinfo=timezone.utc)
    start_price: float = Field(60_000.0, gt=0)
    tick_size: float = Field(0.1, gt=0)


class FilesSourceConfig(Frozen):
    paths: tuple[str, ...] = ()


class ExchangeSourceConfig(Frozen):
    mode: Literal["rest", "stream"] = "rest"
    duration_s: float = Field(60.0, gt=0, description="how long to poll or stream")
    poll_interval_s: float = Field(1.0, gt=0)
    order_book_depth: int = Field(20, gt=0)


class SourcesConfig(Frozen):
    default: Literal["synthetic", "files", "exchange"] = "synthetic"
    synthetic: SyntheticSourceConfig = SyntheticSourceConfig()
    files: FilesSourceConfig = FilesSourceConfig()
    exchange: ExchangeSourceConfig = ExchangeSourceConfig()


class QualityConfig(Frozen):
    backwards_tolerance_ms: int = Field(
        1_000, ge=0, description="a tick older than the stream's latest by more than this is quarantined"
    )
    max_bad_lines: int = Field(0, ge=0, description="unparseable lines quarantined before a file is rejected")
    gap_threshold_s: float = Field(5.0, gt=0, description="silences longer than this count as gaps")


class DataConfig(Frozen):
    store_dir: str | None = Field(None, description="parquet store; default $AUTOSCALP_HOME/store")


class LabelConfig(Frozen):
    """Fee-aware triple-barrier labels (pipeline.labels); recorded with every feature dataset."""

    tp_bps: float = Field(5.0, gt=0, description="take-profit distance, net of costs")
    sl_bps: float = Field(5.0, gt=0, description="stop distance beyond the costs")
    horizon_events: int | None = Field(None, gt=0, description="time barrier after this many events, or...")
    horizon_seconds: float | None = Field(120.0, gt=0, description="...after this many seconds (set exactly one)")
    fee_bps_per_side: float = Field(4.0, ge=0, description="taker fee per side (Binance USD-M: 4 bps)")
    include_half_spread: bool = Field(True, description="add half the entry spread to the costs")

    @model_validator(mode="after")
    def _one_horizon(self) -> LabelConfig:
        if (self.horizon_events is None) == (self.horizon_seconds is None):
            raise ValueError("set exactly one of horizon_events and horizon_seconds (the other to null)")
        return self


class SamplingConfig(Frozen):
    """Which events become rows of the feature store (consecutive events are nearly duplicates)."""

    every: Literal["quote", "event"] = Field("quote", description="rows at quote updates or at any event")
    stride: int = Field(10, gt=0, description="keep every stride-th of them")


class WarmupBudgetConfig(Frozen):
    """Candidates needing more history than this are not extracted: their warm-up would cost rows."""

    quotes: int = Field(6_000, ge=0)
    trades: int = Field(2_500, ge=0)
    events: int = Field(25_000, ge=0, description="with a transform's after_events: admits z2000 (12 spans)")
    seconds: float = Field(360.0, ge=0)
    moves: int = Field(3_000, ge=0, description="quote updates that moved the mid")
    depth: int = Field(25_000, ge=0, description="depth updates, with a depth transform's after_depth")


class SelectionConfig(Frozen):
    count: int = Field(25, gt=0, description="features kept for the models")
    folds: int = Field(4, ge=1, description="walk-forward folds ranked on; the last validation block is never seen")
    max_rows: int = Field(20_000, gt=0, description="rows per fold, subsampled (seeded) above this")
    bins: int = Field(16, ge=2, description="quantile bins of the mutual-information estimate")
    max_abs_spearman: float = Field(0.9, gt=0, le=1, description="skip a candidate this correlated with a kept one")
    seed: int = 7


class FeaturesConfig(Frozen):
    store_dir: str | None = Field(None, description="feature store; default $AUTOSCALP_HOME/features")
    sampling: SamplingConfig = SamplingConfig()
    warmup_budget: WarmupBudgetConfig = WarmupBudgetConfig()
    selection: SelectionConfig = SelectionConfig()


class WalkForwardConfig(Frozen):
    """Purged walk-forward validation (pipeline.training.splits)."""

    folds: int = Field(4, ge=1, description="validation blocks, each after an expanding training window")
    embargo_s: float | None = Field(None, ge=0, description="gap before each validation block; null = the label horizon")
    min_train_rows: int = Field(1_000, gt=0, description="a fold with fewer training rows is an error")


class TuningConfig(Frozen):
    """Optuna studies, one per model kind (pipeline.training.tuning)."""

    trials: int | None = Field(30, gt=0, description="trials per study, all worker processes together")
    timeout_s: float | None = Field(None, gt=0, description="wall-clock budget of each worker")
    storage: str | None = Field(
        None, description="RDB URL (postgresql://...) or journal:PATH; null = $AUTOSCALP_HOME/optuna/optuna.db"
    )
    metric: Literal["log_loss", "auc"] = Field("log_loss", description="mean over the walk-forward folds")
    pruner_startup_trials: int = Field(5, ge=0, description="trials before the median pruner may prune")

    _storage_without_password = field_validator("storage")(no_password_in_url)

    @model_validator(mode="after")
    def _some_budget(self) -> TuningConfig:
        if self.trials is None and self.timeout_s is None:
            raise ValueError("set trials or timeout_s (or both): a study needs a budget")
        return self


class EnsembleWeightsConfig(Frozen):
    logistic: float = Field(0.10, ge=0)
    forest: float = Field(0.30, ge=0)
    lstm: float = Field(0.40, ge=0)
    xgb: float = Field(0.20, ge=0)

    @model_validator(mode="after")
    def _on_simplex(self) -> EnsembleWeightsConfig:
        if abs(sum(self.model_dump().values()) - 1.0) > 1e-9:
            raise ValueError(f"ensemble weights must sum to 1, got {sum(self.model_dump().values()):g}")
        return self


class TrackingConfig(Frozen):
    """MLflow tracking and model registry (pipeline.training.tracking)."""

    uri: str | None = Field(
        None, description="tracking + registry URI (http://host:5000, postgresql://user@host/db...); null = "
        "$MLFLOW_TRACKING_URI, else sqlite:///$AUTOSCALP_HOME/mlflow/mlflow.db"
    )
    artifact_location: str | None = Field(
        None, description="artefact root of the experiment when this creates it (s3://bucket/prefix, file:///shared/"
        "dir...); null = $AUTOSCALP_HOME/mlflow/artifacts for a database URI, the server's own store for http(s)"
    )
    _uri_without_password = field_validator("uri")(no_password_in_url)
    experiment: str = Field("autoscalp", description="MLflow experiment of the retrain cycles")
    register_model: bool = Field(True, description="register the ensemble as autoscalp-<symbol slug>@challenger")


class TrainingConfig(Frozen):
    """Models, validation, tuning and the ensemble (pipeline.models, pipeline.training)."""

    seed: int = 7
    calibration: Literal["isotonic", "platt", "none"] = Field(
        "isotonic", description="post-hoc calibration of each model, fitted on its validation fold"
    )
    walk_forward: WalkForwardConfig = WalkForwardConfig()
    tuning: TuningConfig = TuningConfig()
    weights: EnsembleWeightsConfig = EnsembleWeightsConfig()
    refit_weights: bool = Field(False, description="re-fit the weights on validation predictions (simplex)")
    decision_threshold: float = Field(
        0.5, gt=0, lt=1, description="P(up) at which a row counts as a long signal: precision, recall, confusion"
    )
    tracking: TrackingConfig = TrackingConfig()


class AppConfig(Frozen):
    exchange: ExchangeConfig = ExchangeConfig()
    symbols: tuple[str, ...] = ("BTC/USDT:USDT",)
    data: DataConfig = DataConfig()
    sources: SourcesConfig = SourcesConfig()
    quality: QualityConfig = QualityConfig()
    labels: LabelConfig = LabelConfig()
    features: FeaturesConfig = FeaturesConfig()
    training: TrainingConfig = TrainingConfig()

    @field_validator("symbols")
    @classmethod
    def _unified_symbols(cls, symbols: tuple[str, ...]) -> tuple[str, ...]:
        for symbol in symbols:
            if not UNIFIED_SYMBOL.match(symbol):
                raise ValueError(f"{symbol!r} is not a ccxt unified symbol such as 'BTC/USDT:USDT'")
        if not symbols:
            raise ValueError("at least one symbol is needed")
        return symbols


class Credentials(Frozen):
    """Exchange API keys, read from the environment only and never printed."""

    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None

    @classmethod
    def from_env(cls, exchange_id: str, environ: dict[str, str] | None = None) -> Credentials:
        env = os.environ if environ is None else environ
        prefix = f"AUTOSCALP_{exchange_id.upper()}_"

        def read(name: str) -> SecretStr | None:
            value = env.get(prefix + name) or env.get("AUTOSCALP_" + name)
            return SecretStr(value) if value else None

        return cls(api_key=read("API_KEY"), api_secret=read("API_SECRET"))

    @property
    def complete(self) -> bool:
        return self.api_key is not None and self.api_secret is not None


ConfigModel = TypeVar("ConfigModel", bound=BaseModel)


def load_config(path: str | Path | None = None, model: type[ConfigModel] = AppConfig) -> ConfigModel:
    """Load and validate a config file; no path (and no AUTOSCALP_CONFIG) gives the defaults.

    ``model`` is the whole file's model: the pipeline's ``AppConfig`` here, or a subclass that
    adds the sections of higher layers (``flows.config.ProductConfig`` adds the engine's).
    """
    if path is None:
        path = os.environ.get(CONFIG_ENV) or None
    if path is None:
        return model()
    path = Path(path)
    raw = _read_with_extends(path, seen=())
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc, model)}") from None


def _read_with_extends(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'extends' loops back to itself")
    raw = _read_yaml(path)
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends: expected a file path, got {type(parent).__name__}")
    base = _read_with_extends(path.parent / parent, seen + (path.resolve(),))
    return _deep_merge(base, raw)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: {where}invalid YAML: {problem}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    secret = _find_secret_key(raw)
    if secret:
        raise ConfigError(
            f"{path}: {secret}: secrets are never read from YAML; set AUTOSCALP_API_KEY and "
            "AUTOSCALP_API_SECRET in the environment"
        )
    return raw


def _find_secret_key(raw: Any, prefix: str = "") -> str | None:
    if isinstance(raw, dict):
        for key, value in raw.items():
            dotted = f"{prefix}{key}"
            if str(key).lower() in SECRET_KEYS:
                return dotted
            found = _find_secret_key(value, dotted + ".")
            if found:
                return found
    return None


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(exc: ValidationError, model: type[BaseModel]) -> str:
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    key = ".".join(loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        known = _known_keys(model, loc[:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(known)})"
        return f"{key}: unknown key{hint}"
    message = error["msg"].removeprefix("Value error, ")
    if isinstance(error.get("ctx", {}).get("error"), SecretInConfigError):
        return f"{key}: {message}"  # never echo the value: it holds the secret
    return f"{key}: {message} (got {error.get('input')!r})"


def _known_keys(model: type[BaseModel], loc: list[str]) -> list[str]:
    for part in loc:
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted(model.model_fields)
