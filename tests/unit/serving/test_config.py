import pytest
from pydantic import ValidationError

from pipeline.config import load_config
from pipeline.errors import ConfigError
from serving.config import EngineConfig, RegimeConfig


def test_configs_are_frozen_and_reject_unknown_keys():
    config = EngineConfig()
    with pytest.raises(ValidationError):
        config.risk.stale_ms = 1  # type: ignore[misc]
    with pytest.raises(ValidationError):
        EngineConfig.model_validate({"risk": {"stale_msec": 1}})


def test_hysteresis_thresholds_must_not_cross():
    with pytest.raises(ValidationError, match="exit threshold"):
        RegimeConfig(vol_ratio_enter=1.2, vol_ratio_exit=1.5)


def test_routing_names_only_known_strategies():
    with pytest.raises(ValidationError):
        EngineConfig.model_validate({"routing": {"normal": ["grid_bot"]}})


def test_a_bad_file_is_one_line_naming_the_key(tmp_path):
    path = tmp_path / "engine.yaml"
    path.write_text("leverage:\n    mode: yolo\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, EngineConfig)
    assert "leverage.mode" in str(err.value) and "\n" not in str(err.value)
