"""Tick sources behind one interface (``base.TickSource``): files, exchange (ccxt), synthetic.

``build_sources`` turns a source name and the config into the sources one ingest runs: one per
file for ``files``, one per symbol for ``exchange`` and ``synthetic`` (each a separately retried
unit of work in the ingest flow).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.config import AppConfig, Credentials
from pipeline.data.sources.base import TickBatch, TickSource
from pipeline.errors import ConfigError

SourceName = Literal["synthetic", "files", "exchange"]
SOURCE_NAMES: tuple[str, ...] = ("synthetic", "files", "exchange")


@dataclass(frozen=True)
class SourceSpec:
    """One unit of ingest work: a source name and what it reads (a file path or a symbol)."""

    source: SourceName
    target: str
    exchange: str | None = None  # override for files that do not name their exchange
    symbol: str | None = None  # override for files that do not name their symbol


def plan_sources(
    config: AppConfig,
    source: str | None = None,
    paths: tuple[str, ...] = (),
    symbols: tuple[str, ...] = (),
    exchange: str | None = None,
) -> list[SourceSpec]:
    name = source or config.sources.default
    if name not in SOURCE_NAMES:
        raise ConfigError(f"unknown source {name!r}; choose one of {', '.join(SOURCE_NAMES)}")
    if name == "files":
        targets = paths or config.sources.files.paths
        if not targets:
            raise ConfigError("source 'files' needs --path (or sources.files.paths in the config)")
        symbol = symbols[0] if len(symbols) == 1 else None
        return [SourceSpec("files", str(p), exchange=exchange, symbol=symbol) for p in targets]
    return [SourceSpec(name, s, exchange=exchange) for s in (symbols or config.symbols)]  # type: ignore[arg-type]


def build_source(spec: SourceSpec, config: AppConfig) -> TickSource:
    if spec.source == "files":
        from pipeline.data.sources.files import FileSource

        return FileSource(
            spec.target, max_bad_lines=config.quality.max_bad_lines, exchange=spec.exchange, symbol=spec.symbol
        )
    if spec.source == "synthetic":
        from pipeline.data.sources.synthetic import SyntheticSource

        return SyntheticSource(config.sources.synthetic, (spec.target,), exchange=spec.exchange or "synthetic")
    from pipeline.data.sources.exchange import ExchangeSource

    exchange_config = config.exchange
    if spec.exchange:
        exchange_config = exchange_config.model_copy(update={"id": spec.exchange})
    return ExchangeSource(
        exchange_config,
        config.sources.exchange,
        (spec.target,),
        credentials=Credentials.from_env(exchange_config.id),
    )


__all__ = ["SOURCE_NAMES", "SourceSpec", "TickBatch", "TickSource", "build_source", "plan_sources"]
