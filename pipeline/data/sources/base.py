"""The one interface every tick source implements.

A source yields ``TickBatch``es: normalised rows of one kind for one (exchange, symbol), plus the
lines it could not parse (already in quarantine form). Sources do no quality filtering: that is
``pipeline.data.quality``'s job, so every source is checked by the same rules.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from pipeline.data.schemas import QUARANTINE, Kind


@dataclass(frozen=True)
class TickBatch:
    exchange: str
    symbol: str
    kind: Kind
    rows: pa.Table  # the kind's schema (see schemas.conform), maybe with an exec_type column
    rejects: pa.Table = field(default_factory=QUARANTINE.empty_table)  # unparseable input


class TickSource(Protocol):
    """Anything that produces normalised ticks: files, an exchange, the simulator."""

    @property
    def description(self) -> str:
        """Where the ticks come from, for logs and quarantine rows (never contains secrets)."""
        ...

    def batches(self) -> Iterator[TickBatch]:
        """All ticks of this source. Raises SourceError when the input is unreadable."""
        ...


def rejects_table(source: str, items: list[tuple[str, str]]) -> pa.Table:
    """Quarantine rows for unparseable input: (reason, raw text) pairs."""
    return pa.table(
        {
            "ts_ns": pa.nulls(len(items), pa.int64()),
            "recv_ns": pa.nulls(len(items), pa.int64()),
            "reason": [reason for reason, _ in items],
            "source": [source] * len(items),
            "row": [raw for _, raw in items],
        },
        schema=QUARANTINE,
    )


def row_json(row: dict[str, Any]) -> str:
    return json.dumps(row, default=str, sort_keys=True)
