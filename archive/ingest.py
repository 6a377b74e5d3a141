"""Call events and result records -> archive rows, written idempotently.

The unit of input is what Redis holds: call events (:mod:`callevents.schema`, the ``event`` dicts) and
the records of a call's results stream (:mod:`workers.contract`: ``result``, ``failure``, ``turn`` and
``end`` records; embeddings are never archived). ``ser-archive`` feeds what it reads from the streams,
``ser-produce --archive`` feeds a finished call's events and records held in memory: the same code.

Metadata: ``call_started.params`` keys feed the indexed columns (:data:`META_KEYS`); all params are kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine

#: Which ``params`` names feed each metadata column (first present wins; compared case-insensitively).
META_KEYS: dict[str, tuple[str, ...]] = {
    "agent": ("agent", "agent_id", "agentid", "agent_name"),
    "queue": ("queue", "queue_id", "queueid", "queue_name", "queuename"),
    "direction": ("direction",),
    "tenant": ("tenant", "tenant_id", "tenantid", "organizationid"),
}
#: Longest payload kept in a dead letter (characters).
MAX_DEAD_PAYLOAD = 8192


def event_key(event: Mapping[str, Any]) -> str:
    """The event's natural key: a digest of its canonical JSON (32 hex characters)."""
    raise NotImplementedError


@dataclass
class Batch:
    """Rows to write in one transaction, gathered from events and records (any calls, any order)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)  # each with its call id in "stream_id"

    def add_event(self, event: Mapping[str, Any]) -> None:
        """Validate and keep one call event; ValueError (the reason) when it is not a valid event."""
        raise NotImplementedError

    def add_record(self, call_id: str, record: Mapping[str, Any]) -> None:
        """Validate and keep one record of call ``call_id``'s results stream; ValueError when invalid."""
        raise NotImplementedError


def write(conn: Connection, batch: Batch, *, now: float | None = None) -> set[str]:
    """Upsert the batch's rows (calls, segments, events, alerts) in ``conn``'s transaction; recompute the
    scores (:mod:`archive.scores`) of every touched call that has ended. Idempotent: writing a batch twice,
    or entries again in later batches, changes nothing. Returns the call ids touched."""
    raise NotImplementedError


def refresh_scores(conn: Connection, call_ids: Iterable[str]) -> None:
    """Recompute ``speakers``, ``label_shares`` and the calls' headline columns from their stored segments."""
    raise NotImplementedError


def dead_letter(conn: Connection, *, stream: str, entry_id: str, reason: str, payload: Any,
                call_id: str | None = None, now: float | None = None) -> None:
    """Keep an entry that could not be archived (idempotent per stream and entry id)."""
    raise NotImplementedError


def archive_call(engine: Engine, *, events: Iterable[Mapping[str, Any]], records: Iterable[Mapping[str, Any]],
                 call_id: str) -> None:
    """Archive one finished call held in memory (``ser-produce --archive``): its events in order and its
    records, in one transaction."""
    raise NotImplementedError
