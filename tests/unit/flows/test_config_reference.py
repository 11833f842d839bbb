"""The configuration reference generated from the typed configs: conf/REFERENCE.md is up to date,
covers every key of conf/base.yaml, and `autoscalp config show` prints a config that loads back
to the same values."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from flows.cli import app
from flows.config import ProductConfig, load_product_config
from flows.config_reference import REFERENCE_PATH, render_reference
from pipeline.config import Frozen

REPO = Path(__file__).resolve().parents[3]
runner = CliRunner()


def leaf_paths(raw: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in raw.items():
        if isinstance(value, dict) and value:
            out |= leaf_paths(value, f"{prefix}{key}.")
        else:
            out.add(f"{prefix}{key}")
    return out


def test_the_committed_reference_is_up_to_date():
    assert REFERENCE_PATH.read_text(encoding="utf-8") == render_reference(), (
        "conf/REFERENCE.md is behind the config models: run `autoscalp config reference --output conf/REFERENCE.md`")
    result = runner.invoke(app, ["config", "reference", "--check"])
    assert result.exit_code == 0, result.output


def test_every_key_of_base_yaml_is_in_the_reference():
    text = render_reference()
    raw = yaml.safe_load((REPO / "conf" / "base.yaml").read_text())
    rows = {line.split("`")[1] for line in text.splitlines() if line.startswith("| `")}

    def covered(path: str) -> bool:  # a map or a union of models is one row (its item type under Types)
        parts = path.split(".")
        return any(".".join(parts[:n]) in rows for n in range(1, len(parts) + 1))

    missing = [p for p in sorted(leaf_paths(raw)) if not covered(p)]
    assert not missing, missing
    assert "strategy_tuning.space" in rows and "venue.latency.order" in rows


def test_rows_carry_type_constraints_default_and_description():
    text = render_reference()
    assert "| `serve.http_port` | int (>= 0, <= 65535) | `8787` | 0: any free port |" in text
    assert '| `serve.broker` | "paper" \\| "live" | `"paper"` |' in text  # a Literal, its | escaped
    assert "| `training.tuning.trials` | int \\| null (> 0) | `30` |" in text
    assert "### MarginTier" in text and "| `maint_margin_rate` | float (> 0, < 1) | required |" in text
    # no Field description: the comment on the key's line in conf/base.yaml
    assert "| `exchange.timeout_ms` | int (> 0) | `10000` |" in text


def test_a_new_field_shows_up_with_its_description():
    class Inner(Frozen):
        """The inner section."""

        ratio: float = Field(0.5, gt=0, lt=1, description="a share | of something")

    class Outer(BaseModel):
        inner: Inner = Inner()
        names: tuple[str, ...] = ("a",)

    text = render_reference(Outer, base_yaml=None)
    assert "## inner\n\nThe inner section." in text
    assert "| `inner.ratio` | float (> 0, < 1) | `0.5` | a share \\| of something |" in text
    assert '| `names` | list[str] | `["a"]` |  |' in text


def test_config_show_prints_the_effective_config(tmp_path):
    result = runner.invoke(app, ["config", "show", "--config", str(REPO / "conf" / "dev.yaml")])
    assert result.exit_code == 0, result.output
    shown = tmp_path / "shown.yaml"
    shown.write_text(result.stdout)
    assert load_product_config(shown) == load_product_config(REPO / "conf" / "dev.yaml")
    assert yaml.safe_load(result.stdout)["sources"]["synthetic"]["ticks"] == 50_000  # dev.yaml's override
    as_json = runner.invoke(app, ["config", "show", "--json"])
    assert json.loads(as_json.stdout) == ProductConfig().model_dump(mode="json")


def test_config_show_of_a_bad_file_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("serve:\n  brokr: paper\n")
    result = runner.invoke(app, ["config", "show", "--config", str(path)])
    assert result.exit_code == 2
    assert "serve.brokr: unknown key (did you mean 'broker'?)" in result.output
