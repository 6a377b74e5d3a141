"""The one filter set over archived calls, shared by ``ser-calls search|trends|export``, the dashboard's
History and Trends pages and ``bench.archive`` (one parser, one SQL translation)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select


@dataclass(frozen=True)
class CallFilter:
    since_ts: float | None = None  # started at or after (unix s)
    until_ts: float | None = None  # started before
    agent: str | None = None
    queue: str | None = None
    direction: str | None = None
    tenant: str | None = None
    customer_score_min: float | None = None
    customer_score_max: float | None = None
    agent_score_min: float | None = None
    agent_score_max: float | None = None
    trend: str | None = None  # the customer's (archive.scores.TRENDS)
    label: str | None = None  # with label_share_min: a speaker's share of this label at least that
    label_share_min: float | None = None
    label_role: str | None = None  # whose share (agent/customer); None: any speaker
    alert_rule: str | None = None  # an alert of this rule fired
    interruptions_min: int | None = None
    non_talk_share_min: float | None = None
    non_talk_share_max: float | None = None
    duration_min_s: float | None = None
    duration_max_s: float | None = None
    model_version: str | None = None
    status: str | None = None  # live | ended


#: Sort keys: name -> column of ``calls``.
SORTS = ("started", "duration", "customer_score", "agent_score", "customer_negative_share", "interruptions",
         "non_talk_share")


def parse(params: Mapping[str, Any]) -> CallFilter:
    """A filter from query-string/CLI values (strings; dates as ISO 8601 or unix seconds); ValueError naming
    the bad parameter and value."""
    raise NotImplementedError


def apply(stmt: Select[Any], flt: CallFilter) -> Select[Any]:
    """``stmt`` (a select over ``calls``) narrowed by ``flt``."""
    raise NotImplementedError
