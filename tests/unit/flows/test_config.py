from pathlib import Path

import pytest

from flows.config import ProductConfig, load_product_config
from pipeline.config import AppConfig, load_config
from pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]


def test_base_yaml_spells_out_the_embedded_defaults():
    assert load_product_config(REPO / "conf" / "base.yaml") == ProductConfig()


def test_every_shipped_config_validates():
    for path in sorted((REPO / "conf").glob("*.yaml")):
        load_product_config(path)


def test_the_engine_section_is_validated_with_the_rest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("engine:\n  leverage:\n    mode: yolo\n")
    with pytest.raises(ConfigError, match=r"engine\.leverage\.mode"):
        load_product_config(path)
    # The pipeline alone does not know the engine's section: a layer below must not need it.
    with pytest.raises(ConfigError, match="engine: unknown key"):
        load_config(path, AppConfig)
