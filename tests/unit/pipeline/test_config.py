from pathlib import Path

import pytest

from pipeline.config import AppConfig, Credentials, load_config
from pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_no_path_gives_defaults(monkeypatch):
    monkeypatch.delenv("AUTOSCALP_CONFIG", raising=False)
    assert load_config() == AppConfig()


def test_extends_overrides_only_what_it_names(tmp_path):
    write(tmp_path, "symbols: [ETH/USDT:USDT]\nsources: {synthetic: {seed: 1, ticks: 10}}\n", "base.yaml")
    child = write(tmp_path, "extends: base.yaml\nsources: {synthetic: {ticks: 99}}\n")
    config = load_config(child)
    assert config.symbols == ("ETH/USDT:USDT",)
    assert (config.sources.synthetic.seed, config.sources.synthetic.ticks) == (1, 99)


def test_config_is_frozen():
    with pytest.raises(Exception):
        AppConfig().symbols = ("X/Y",)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sources:\n  synthetic:\n    seeed: 3\n", "sources.synthetic.seeed: unknown key (did you mean 'seed'?)"),
        ("quality:\n  max_bad_lines: -1\n", "quality.max_bad_lines"),
        ("symbols: [BTCUSDT]\n", "symbols: 'BTCUSDT' is not a ccxt unified symbol"),
        ("exchange: {id: binanceusdm\n", "invalid YAML"),
        ("exchange:\n  api_key: abc123\n", "exchange.api_key: secrets are never read from YAML"),
        ("training:\n  tuning:\n    storage: postgresql://u:abc123@db/optuna\n",
         "training.tuning.storage: the URL holds a password: secrets are never read from config files"),
        ("training:\n  tracking:\n    uri: https://u:abc123@mlflow.example\n", "training.tracking.uri: the URL holds"),
        ("- a\n- b\n", "expected a mapping"),
        ("extends: missing.yaml\n", "missing.yaml: config file not found"),
    ],
)
def test_bad_config_fails_fast_with_file_key_and_reason(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    assert "abc123" not in message


def test_extends_loop_is_reported(tmp_path):
    write(tmp_path, "extends: b.yaml\n", "a.yaml")
    write(tmp_path, "extends: a.yaml\n", "b.yaml")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(tmp_path / "a.yaml")


def test_credentials_come_from_the_environment_and_never_print():
    env = {"AUTOSCALP_BINANCEUSDM_API_KEY": "key-SECRET-1", "AUTOSCALP_API_SECRET": "sec-SECRET-2"}
    creds = Credentials.from_env("binanceusdm", env)
    assert creds.complete
    assert creds.api_key.get_secret_value() == "key-SECRET-1"
    assert "SECRET" not in repr(creds) and "SECRET" not in str(creds)
    assert not Credentials.from_env("binanceusdm", {}).complete
