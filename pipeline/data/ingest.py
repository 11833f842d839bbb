"""Ingest one source into the store: parse everything, check quality, then write.

The whole source is read before the first write, so an unreadable file (corrupt, truncated,
wrong format) raises ``SourceError`` with the store untouched. Writes are idempotent, so an
ingest interrupted half-way is completed by running it again.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from pipeline.config import QualityConfig
from pipeline.data.quality import split_valid
from pipeline.data.sources.base import TickSource
from pipeline.data.store import TickStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamReport:
    exchange: str
    symbol: str
    kind: str
    parsed: int  # rows the source produced (before quality checks)
    added: int  # new rows written to the store
    duplicates: int  # valid rows already stored (idempotent re-ingest)
    quarantined: int  # new rows written to quarantine (bad values and unparseable lines)


@dataclass(frozen=True)
class IngestReport:
    source: str
    streams: tuple[StreamReport, ...]

    @property
    def added(self) -> int:
        return sum(s.added for s in self.streams)

    @property
    def quarantined(self) -> int:
        return sum(s.quarantined for s in self.streams)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "added": self.added,
            "quarantined": self.quarantined,
            "streams": [asdict(s) for s in self.streams],
        }


def ingest(source: TickSource, store: TickStore, quality: QualityConfig) -> IngestReport:
    batches = list(source.batches())
    tolerance_ns = quality.backwards_tolerance_ms * 1_000_000
    checked = [(b, split_valid(b.kind, b.rows, source.description, tolerance_ns)) for b in batches]
    streams = []
    with store.locked():
        for batch, result in checked:
            written = store.write(batch.exchange, batch.symbol, batch.kind, result.valid)
            bad = store.write_quarantine(batch.exchange, batch.symbol, batch.kind, result.quarantined)
            rejected = store.write_quarantine(batch.exchange, batch.symbol, batch.kind, batch.rejects)
            streams.append(
                StreamReport(
                    exchange=batch.exchange,
                    symbol=batch.symbol,
                    kind=batch.kind.value,
                    parsed=batch.rows.num_rows,
                    added=written.added,
                    duplicates=written.duplicates,
                    quarantined=bad.added + rejected.added,
                )
            )
            log.info(
                "%s %s %s: %d parsed, %d added, %d already stored, %d quarantined",
                batch.exchange, batch.symbol, batch.kind.value,
                batch.rows.num_rows, written.added, written.duplicates, bad.added + rejected.added,
            )
    return IngestReport(source.description, tuple(streams))
