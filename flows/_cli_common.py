"""What every ``autoscalp`` command shares: the --config and --json options, the console, and
bad input as one line on stderr with exit code 2. A module of its own so that command groups in
other modules (flows/features_cli.py) can use it without importing flows/cli.py, which imports them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from flows.config import ProductConfig, load_product_config
from pipeline.errors import AutoscalpError

ConfigOption = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="YAML config file (default: $AUTOSCALP_CONFIG or built-in defaults)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]
PrefectOption = Annotated[
    bool, typer.Option("--prefect/--no-prefect", help="Run as a Prefect flow (default) or in-process.")
]
stdout = Console()
if not stdout.is_terminal:
    # Piped or captured output: do not squeeze tables into 80 columns.
    stdout = Console(width=max(stdout.width, 180))


@contextmanager
def user_errors() -> Iterator[None]:
    """Bad input becomes one line on stderr and exit code 2."""
    try:
        yield
    except AutoscalpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None


def _config(path: Path | None) -> ProductConfig:
    with user_errors():
        return load_product_config(path)
