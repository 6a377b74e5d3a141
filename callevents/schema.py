"""Keys, event kinds and encoding of call events and the active-call registry.

Redis keys (every key starts with ``ser:``):

* ``ser:calls`` -- sorted set of **active** calls: member = call id, score = start time (unix s).
* ``ser:calls:ended`` -- sorted set of **recently ended** calls: member = call id, score = end
  time; entries older than :data:`ENDED_KEEP_S` or beyond the newest :data:`ENDED_KEEP` are
  trimmed by the writer at each call end.
* ``ser:call:<call id>`` -- hash, the call's current state (expires :data:`CALL_TTL_S` after its
  last write): ``info`` (the ``call_started`` event), ``trend:<channel>`` (the channel's newest
  ``trend`` event), ``alerts`` (JSON list of the open ``alert_opened`` events), ``ended`` (the
  ``call_ended`` event, once ended), ``alive`` (wall-clock time of the ingestion side's latest
  write or heartbeat, unix seconds; refreshed at least every :data:`HEARTBEAT_S` while audio or
  results arrive, so a reader tells a call on hold from one whose producer is gone:
  :data:`LOST_AFTER_S`).
* ``ser:events:<call id>`` -- stream of the call's events (``MAXLEN ~`` :data:`CALL_EVENTS_MAXLEN`,
  expires :data:`CALL_TTL_S` after its last write).
* ``ser:events`` -- global stream of every call's events (``MAXLEN ~`` :data:`EVENTS_MAXLEN`).

Each stream entry has the fields ``kind``, ``call_id`` and ``event`` (JSON). Every event has
``kind``, ``call_id`` and ``ts`` (wall clock, unix seconds); times inside the call (``*_s``) are
seconds of audio from the call's start. Per kind:

* ``call_started``: ``source`` (``file``, ``stdin``, ``twilio``, ...), ``channels`` (names in
  order), ``params`` (custom parameters, str -> str), ``model`` (``name@version``), ``labels``.
* ``trend`` (per channel, every :data:`~callevents.rules.DEFAULT_TREND_EVERY_S` s of audio):
  ``channel``, ``at_s``, ``window_s``, ``segments`` (in the window), ``shares`` (label -> fraction
  of the window's segments), ``negativity`` (mean probability of the negative labels),
  ``last`` (the newest segment: ``seq``, ``start_s``, ``end_s``, ``label``, ``confidence`` and
  ``uncertain`` when the record has it).
* ``alert_opened``: ``rule``, ``channel``, ``since_s`` (audio time it opened), ``window_s``,
  ``score`` (the mean that crossed), ``threshold`` (the rule's ``open_at``), ``labels``.
* ``alert_closed``: as ``alert_opened`` plus ``until_s``; ``score``/``threshold`` are the closing
  mean and ``close_at``; ``reason`` is ``score`` or ``call_ended`` (still open when the call ended).
* ``dynamics`` (every ``every_s`` (5) s of settled audio; ``producer.dynamics``): ``at_s``,
  ``duration_s`` (settled so far), ``channels`` (name -> ``talk_s``, ``talk_share``, ``level_db``
  (K-weighted, LKFS, or null), ``raised_s``, ``rate_sps`` (syllables per second of speech, or
  null), ``rate_rel`` (the latest 10 s of speech's rate over the speaker's earlier rate, or null
  before 20 s of speech) and, with two or more channels, ``interruptions``
  made and how many the other ``yielded`` to), ``non_talk_s``,
  ``silence`` (``min_s``, ``count``, ``total_s``, ``longest_s``), ``overtalk`` (``min_s``, ``count``,
  ``total_s``; not on mono calls).
* ``silence`` (when one of at least ``silence_min_s`` ends): ``start_s``, ``end_s``, ``duration_s``.
* ``overtalk`` (when one of at least ``overtalk_min_s`` ends): ``start_s``, ``end_s``,
  ``duration_s``, ``interruption``; when true also ``by`` (who came in), ``over`` (who was
  speaking) and ``yielded`` (they stopped within ``yield_s``).
* ``call_ended``: ``reason`` (``completed``, ``incomplete``, ``error``, ``disconnected``),
  ``duration_s``, ``segments`` (classified), ``failed``, ``summary`` (per channel, as
  :func:`reports.summary.summarise`: ``segments``, ``failed``, ``shares``, ``longest_negative``),
  ``dynamics`` (the call's totals, as the ``dynamics`` event, plus ``silences`` and ``overtalks``:
  ``[start_s, end_s]`` lists).

The hash also holds ``dynamics`` (the newest ``dynamics`` event).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from models.ids import key_id

CALLS_KEY = "ser:calls"
ENDED_KEY = "ser:calls:ended"
CALL_PREFIX = "ser:call:"
EVENTS_KEY = "ser:events"
EVENTS_PREFIX = "ser:events:"
#: Approximate cap of the global events stream.
EVENTS_MAXLEN = 10_000
#: Approximate cap of one call's events stream.
CALL_EVENTS_MAXLEN = 10_000
#: Seconds a call's hash and events stream live after their last write.
CALL_TTL_S = 3600
#: A live call's ``alive`` field is refreshed at least this often (seconds) while its producer runs.
HEARTBEAT_S = 10.0
#: Readers treat an active call whose ``alive`` is older than this (seconds) as **lost**: its producer
#: died without ending it (killed, machine gone). A lost call is shown as ended with reason ``lost``;
#: its hash still expires :data:`CALL_TTL_S` after the last write.
LOST_AFTER_S = 60.0
#: Recently ended calls kept in ``ser:calls:ended``: at most this many, for at most this long.
ENDED_KEEP = 200
ENDED_KEEP_S = 3600

CALL_STARTED = "call_started"
TREND = "trend"
ALERT_OPENED = "alert_opened"
ALERT_CLOSED = "alert_closed"
CALL_ENDED = "call_ended"
DYNAMICS = "dynamics"
SILENCE = "silence"
OVERTALK = "overtalk"
KINDS = (CALL_STARTED, TREND, ALERT_OPENED, ALERT_CLOSED, CALL_ENDED, DYNAMICS, SILENCE, OVERTALK)
END_REASONS = ("completed", "incomplete", "error", "disconnected")
#: What readers show as the end reason of a call whose heartbeat stopped (never written by a producer).
LOST = "lost"


#: Custom parameters given by a caller (``ser-produce --meta``, the generic route's header ``params``):
#: names of this form, values of at most :data:`MAX_PARAM_VALUE` characters, at most :data:`MAX_PARAMS`.
PARAM_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_PARAM_VALUE = 256
MAX_PARAMS = 64


def check_params(params: Mapping[Any, Any]) -> dict[str, str]:
    """``params`` as ``call_started.params`` (str -> str); ValueError naming the first bad name or value.
    Values may be strings, numbers or booleans (kept as their text)."""
    if len(params) > MAX_PARAMS:
        raise ValueError(f"{len(params)} parameters (at most {MAX_PARAMS})")
    out: dict[str, str] = {}
    for name, value in params.items():
        if not isinstance(name, str) or not PARAM_NAME.fullmatch(name):
            raise ValueError(f"parameter name {str(name)[:80]!r}: 1-64 characters of [A-Za-z0-9_.-]")
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, int | float):
            value = str(value)
        if not isinstance(value, str) or len(value) > MAX_PARAM_VALUE:
            raise ValueError(f"parameter {name!r}: the value must be text of at most {MAX_PARAM_VALUE} characters")
        out[name] = value
    return out


def is_lost(alive: float, now: float) -> bool:
    """True when a call last heard of at ``alive`` is lost at ``now`` (both unix seconds)."""
    return now - alive > LOST_AFTER_S


def call_key(call_id: str) -> str:
    return CALL_PREFIX + key_id(call_id)


def events_key(call_id: str) -> str:
    return EVENTS_PREFIX + key_id(call_id)


def encode_event(event: dict[str, Any]) -> dict[str, str]:
    """Stream entry fields of one event: ``{"kind", "call_id", "event": json}``."""
    if event.get("kind") not in KINDS:
        raise ValueError(f"unknown event kind: {event.get('kind')!r}")
    return {"kind": str(event["kind"]), "call_id": str(event["call_id"]),
            "event": json.dumps(event, separators=(",", ":"))}


def decode_event(fields: dict[Any, Any]) -> dict[str, Any]:
    """Inverse of :func:`encode_event` (bytes or str keys/values); ValueError when it is not one."""
    raw = fields.get(b"event", fields.get("event"))
    if raw is None:
        raise ValueError("stream entry has no 'event' field")
    event = json.loads(raw)
    if not isinstance(event, dict) or event.get("kind") not in KINDS:
        raise ValueError("stream entry holds no valid event")
    return event
