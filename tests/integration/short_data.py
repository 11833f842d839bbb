"""The settings integration tests use for a few minutes of ticks (a small synthetic market or ~6
minutes of a real capture): short label horizon, small warm-up budget, no fees (a 10 bps round
trip is rarely covered within seconds, and every label would be one class)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SHORT_DATA: dict[str, Any] = {
    "labels": {"tp_bps": 1.5, "sl_bps": 1.5, "horizon_seconds": 15.0, "fee_bps_per_side": 0.0,
               "include_half_spread": False},
    "features": {"sampling": {"stride": 4},
                 "warmup_budget": {"quotes": 400, "trades": 200, "events": 1500, "seconds": 20.0, "moves": 150,
                                   "depth": 500}},
    "training": {"walk_forward": {"min_train_rows": 100}},
}  # fmt: skip


def short_data_yaml(extends: Path | None = None, **sections: dict[str, Any]) -> str:
    """A config file's text: ``SHORT_DATA`` with ``sections`` merged in (one level deep: a section's
    keys are added to or replace the shared ones), extending ``extends`` when given."""
    config: dict[str, Any] = {"extends": str(extends)} if extends is not None else {}
    for name in [*SHORT_DATA, *(name for name in sections if name not in SHORT_DATA)]:
        config[name] = {**SHORT_DATA.get(name, {}), **sections.get(name, {})}
    return yaml.safe_dump(config, sort_keys=False)
