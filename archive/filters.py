"""The one filter set over archived calls, shared by ``ser-calls search|trends|export``, the dashboard's
History and Trends pages and ``bench.archive`` (one parser, one SQL translation).

Parameters (:data:`PARAMS`; query-string names, the CLI's options are the same with ``-`` for ``_``):

* ``since`` / ``until``: the call started at or after / before. ISO 8601 date (``2026-12-01``: UTC
  midnight; a date-only ``until`` includes that whole day) or date-time (``2026-12-01T09:30``,
  ``...Z``, ``...+01:00``; UTC when no zone is given), or unix seconds (``1796083200``).
* ``agent``, ``queue``, ``direction``, ``tenant``: exact values of the call's metadata.
* ``customer_score_min|max``, ``agent_score_min|max``: the headline scores, -5..+5 (inclusive).
* ``trend``: the customer's trend (:data:`archive.scores.TRENDS`, case-insensitive).
* ``label`` with ``label_share_min`` (0..1): a speaker's duration-weighted share of that label is at
  least that; ``label_role`` (agent|customer) says whose (default: any speaker).
* ``alert_rule``: an alert of this rule fired in the call.
* ``interruptions_min``: the call's interruptions (all channels) at least that.
* ``non_talk_share_min|max``: 0..1.
* ``duration_min|max``: seconds.
* ``model_version``: ``3.1.0`` (the version) or ``ser-cnn-lstm@3.1.0`` (name@version).
* ``status``: ``live`` or ``ended``.

Empty values count as absent (an HTML form sends every field); names not listed are ignored, so a
query string may carry paging and sorting beside the filter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, select

from archive.schema import ROLES, alerts, calls, label_shares
from archive.scores import SCALE, TRENDS

#: Call statuses (``calls.status``).
STATUSES = ("live", "ended")


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

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))


#: Sort keys: name -> column of ``calls``.
SORTS = ("started", "duration", "customer_score", "agent_score", "customer_negative_share", "interruptions",
         "non_talk_share")
SORT_COLUMNS = {
    "started": calls.c.started_ts, "duration": calls.c.duration_s, "customer_score": calls.c.customer_score,
    "agent_score": calls.c.agent_score, "customer_negative_share": calls.c.customer_negative_share,
    "interruptions": calls.c.interruptions, "non_talk_share": calls.c.non_talk_share,
}

_TEXT = ("agent", "queue", "direction", "tenant", "alert_rule", "model_version")
# parameter name -> (field, lowest, highest)
_FLOATS: dict[str, tuple[str, float, float]] = {
    "customer_score_min": ("customer_score_min", -SCALE, SCALE),
    "customer_score_max": ("customer_score_max", -SCALE, SCALE),
    "agent_score_min": ("agent_score_min", -SCALE, SCALE),
    "agent_score_max": ("agent_score_max", -SCALE, SCALE),
    "label_share_min": ("label_share_min", 0.0, 1.0),
    "non_talk_share_min": ("non_talk_share_min", 0.0, 1.0),
    "non_talk_share_max": ("non_talk_share_max", 0.0, 1.0),
    "duration_min": ("duration_min_s", 0.0, math.inf),
    "duration_max": ("duration_max_s", 0.0, math.inf),
}
_RANGES = (("customer_score_min", "customer_score_max"), ("agent_score_min", "agent_score_max"),
           ("non_talk_share_min", "non_talk_share_max"), ("duration_min", "duration_max"), ("since", "until"))
#: Every parameter :func:`parse` reads.
PARAMS = ("since", "until", "agent", "queue", "direction", "tenant", "customer_score_min", "customer_score_max",
          "agent_score_min", "agent_score_max", "trend", "label", "label_share_min", "label_role", "alert_rule",
          "interruptions_min", "non_talk_share_min", "non_talk_share_max", "duration_min", "duration_max",
          "model_version", "status")


def parse_time(value: str, *, name: str = "time", end_of_day: bool = False) -> float:
    """Unix seconds from ISO 8601 (date or date-time; UTC without a zone) or unix seconds; a date with
    ``end_of_day`` is the next midnight (so that an ``until`` date includes its day)."""
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise ValueError(f"{name}: not a time: {value!r}")
        return number
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return (start + timedelta(days=1) if end_of_day else start).timestamp()
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ValueError(f"{name}: not an ISO 8601 date/time or unix seconds: {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _number(name: str, value: str, lowest: float, highest: float) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name}: not a number: {value!r}") from None
    if not lowest <= number <= highest:  # also refuses nan
        span = f"at least {lowest:g}" if highest == math.inf else f"in {lowest:g}..{highest:g}"
        raise ValueError(f"{name}: must be {span}, got {value!r}")
    return number


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    for choice in choices:
        if value.lower() == choice.lower():
            return choice
    raise ValueError(f"{name}: must be one of {', '.join(choices)}, got {value!r}")


def parse(params: Mapping[str, Any]) -> CallFilter:
    """A filter from query-string/CLI values (strings; dates as ISO 8601 or unix seconds); ValueError naming
    the bad parameter and value."""
    given: dict[str, str] = {}
    for key, value in params.items():
        name = str(key).replace("-", "_")
        if name in PARAMS and value is not None and str(value).strip() != "":
            given[name] = str(value).strip()
    out: dict[str, Any] = {}
    if "since" in given:
        out["since_ts"] = parse_time(given["since"], name="since")
    if "until" in given:
        out["until_ts"] = parse_time(given["until"], name="until", end_of_day=True)
    for name in _TEXT:
        if name in given:
            out[name] = given[name]
    for name, (attr, lowest, highest) in _FLOATS.items():
        if name in given:
            out[attr] = _number(name, given[name], lowest, highest)
    if "interruptions_min" in given:
        text = given["interruptions_min"]
        if not text.isdigit():
            raise ValueError(f"interruptions_min: must be a whole number >= 0, got {text!r}")
        out["interruptions_min"] = int(text)
    if "trend" in given:
        out["trend"] = _choice("trend", given["trend"], TRENDS)
    if "label_role" in given:
        out["label_role"] = _choice("label_role", given["label_role"], ROLES)
    if "status" in given:
        out["status"] = _choice("status", given["status"], STATUSES)
    if "label" in given:
        out["label"] = given["label"].lower()
    for low, high in _RANGES:
        if low in given and high in given:
            a = out.get(_FLOATS[low][0] if low in _FLOATS else low + "_ts")
            b = out.get(_FLOATS[high][0] if high in _FLOATS else high + "_ts")
            if a is not None and b is not None and a > b:
                word = "after" if low == "since" else "above"
                raise ValueError(f"{low} {given[low]!r} is {word} {high} {given[high]!r}")
    if ("label" in out) != ("label_share_min" in out):
        missing, present = ("label_share_min", "label") if "label" in out else ("label", "label_share_min")
        raise ValueError(f"{present}: needs {missing} too, got {present}={given[present]!r} alone")
    if "label_role" in out and "label" not in out:
        raise ValueError(f"label_role: needs label and label_share_min, got label_role={given['label_role']!r} alone")
    return CallFilter(**out)


def as_params(flt: CallFilter) -> dict[str, str]:
    """The query-string parameters that :func:`parse` turns back into ``flt`` (for paging links)."""
    out: dict[str, str] = {}
    if flt.since_ts is not None:
        out["since"] = repr(flt.since_ts)
    if flt.until_ts is not None:
        out["until"] = repr(flt.until_ts)
    for name in PARAMS:
        if name in ("since", "until"):
            continue
        attr = _FLOATS[name][0] if name in _FLOATS else name
        value = getattr(flt, attr)
        if value is not None:
            out[name] = repr(value) if isinstance(value, float) else str(value)
    return out


def conditions(flt: CallFilter) -> list[ColumnElement[bool]]:
    """The WHERE conditions of ``flt`` over ``calls`` (AND-ed)."""
    c = calls.c
    where: list[ColumnElement[bool]] = []
    simple: list[tuple[Any, Any, str]] = [
        (c.started_ts, flt.since_ts, ">="), (c.started_ts, flt.until_ts, "<"),
        (c.agent, flt.agent, "=="), (c.queue, flt.queue, "=="), (c.direction, flt.direction, "=="),
        (c.tenant, flt.tenant, "=="), (c.status, flt.status, "=="), (c.customer_trend, flt.trend, "=="),
        (c.customer_score, flt.customer_score_min, ">="), (c.customer_score, flt.customer_score_max, "<="),
        (c.agent_score, flt.agent_score_min, ">="), (c.agent_score, flt.agent_score_max, "<="),
        (c.interruptions, flt.interruptions_min, ">="),
        (c.non_talk_share, flt.non_talk_share_min, ">="), (c.non_talk_share, flt.non_talk_share_max, "<="),
        (c.duration_s, flt.duration_min_s, ">="), (c.duration_s, flt.duration_max_s, "<="),
    ]
    for column, value, op in simple:
        if value is None:
            continue
        if op == ">=":
            where.append(column >= value)
        elif op == "<=":
            where.append(column <= value)
        elif op == "<":
            where.append(column < value)
        else:
            where.append(column == value)
    if flt.model_version is not None:
        column = c.model if "@" in flt.model_version else c.model_version
        where.append(column == flt.model_version)
    # Label share and alert rule: the call ids from the child table's index, computed once and hashed
    # (PostgreSQL's "hashed SubPlan"; SQLite materialises IN (SELECT ...) anyway). OFFSET 0 keeps PostgreSQL
    # from flattening it into a semi-join probed once per candidate call, which costs a probe for every
    # call in the time range when few match (docs/archive.md, "Indexes and query plans").
    if flt.label is not None:
        share = label_shares.c
        conds = [share.label == flt.label, share.share >= (flt.label_share_min or 0.0)]
        if flt.label_role is not None:
            conds.append(share.role == flt.label_role)
        where.append(c.call_id.in_(select(share.call_id).where(*conds).offset(0)))
    if flt.alert_rule is not None:
        where.append(c.call_id.in_(select(alerts.c.call_id).where(alerts.c.rule == flt.alert_rule).offset(0)))
    return where


def apply(stmt: Select[Any], flt: CallFilter) -> Select[Any]:
    """``stmt`` (a select over ``calls``) narrowed by ``flt``."""
    where = conditions(flt)
    return stmt.where(*where) if where else stmt
