"""Reads of the archive: search (a page of calls), show (one call), trends (per agent/queue/tenant and
day/week), rows for export; and deletes: one call (an erasure request) or every call older than a
retention period. Used by ``ser-calls``, the dashboard and ``bench.archive``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from archive.filters import CallFilter

#: Rows per page unless asked otherwise, and the most a page may hold.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: Default retention (days) of ``ser-calls prune`` and ``ser-archive --retention-days``.
DEFAULT_RETENTION_DAYS = 90
TREND_BY = ("agent", "queue", "tenant")
TREND_PERIODS = ("day", "week")


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]  # calls' summary columns
    total: int  # calls matching the filter
    offset: int
    limit: int


def search(conn: Connection, flt: CallFilter, *, sort: str = "started", descending: bool = True,
           limit: int = DEFAULT_PAGE_SIZE, offset: int = 0) -> Page:
    raise NotImplementedError


def show(conn: Connection, call_id: str) -> dict[str, Any] | None:
    """Everything archived about one call (by key id or raw id): the call row, speakers with quarters,
    alerts, events (silences, overtalks, dynamics), segments and turns in time order. None when absent."""
    raise NotImplementedError


def trends(conn: Connection, flt: CallFilter, *, by: str, period: str) -> list[dict[str, Any]]:
    """Per (``by`` value, period start): calls, mean customer score, negative share (customer), interruptions
    per call, non-talk share."""
    raise NotImplementedError


def export_rows(conn: Connection, flt: CallFilter, *, what: str = "calls") -> Iterator[dict[str, Any]]:
    """Rows for export, streamed: ``calls`` (one per call) or ``segments`` (one per record)."""
    raise NotImplementedError


def delete(conn: Connection, call_ids: Sequence[str]) -> int:
    """Delete calls and everything of theirs; returns how many calls were deleted."""
    raise NotImplementedError


def prune(conn: Connection, *, older_than_s: float, now: float | None = None) -> int:
    """Delete every call that started more than ``older_than_s`` ago; returns how many."""
    raise NotImplementedError
