"""What the archive accepts: call events and result-stream records checked at the boundary
(:class:`archive.ingest.Batch` calls these). Each check raises ValueError with the reason, naming the bad
field; the archiver files such entries as dead letters and goes on.

Limits (:data:`MAX_EVENT_CHARS`, :data:`MAX_RECORD_CHARS`, :data:`MAX_NAME_CHARS` ...) are far above what
the pipeline writes: they stop a malformed or hostile entry from filling the database.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from callevents import schema as ev
from workers.contract import KINDS as RECORD_KINDS

#: Longest call event, as compact JSON (characters). A call_ended event with every silence and
#: overtalk interval of a long call is the largest the pipeline writes (tens of KB).
MAX_EVENT_CHARS = 256 * 1024
#: Longest result-stream record, as compact JSON (characters; the embedding is dropped first). Fields with
#: a column are bounded one by one (below); the others, kept in ``segments.extra``, together by this.
MAX_RECORD_CHARS = 16 * 1024
#: Longest raw call id (platform ids are far shorter).
MAX_ID_CHARS = 1024
#: Longest channel, rule, label, model, source or metadata value (the columns' widths).
MAX_NAME_CHARS = {"channel": 64, "rule": 64, "label": 32, "model": 128, "source": 32}
#: Most labels in a record's ``probs`` or a call's ``labels``; most channels; most params.
MAX_LABELS = 64
MAX_CHANNELS = 32
MAX_PARAMS = 256
#: Longest ``params`` key or value (characters).
MAX_PARAM_CHARS = 1024
#: Largest integer field (the columns are 32-bit).
MAX_INT = 2**31 - 1
#: Longest failure reason (characters; workers cut theirs at 500).
MAX_ERROR_CHARS = 4096
#: Record fields the segments table has columns for (anything else goes to ``segments.extra``).
SEGMENT_FIELDS = frozenset(("kind", "stream_id", "channel", "seq", "start_s", "end_s", "label", "confidence",
                            "uncertain", "probs", "history", "segments", "error", "model"))
#: Record fields never archived.
DROPPED_FIELDS = frozenset(("embedding",))


def _num(obj: Mapping[str, Any], name: str, *, what: str, optional: bool = False) -> float | None:
    v = obj.get(name)
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{what}: {name} must be a finite number, got {v!r:.60}")
    return float(v)


def _int(obj: Mapping[str, Any], name: str, *, what: str, optional: bool = False) -> int | None:
    v = obj.get(name)
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_INT:
        raise ValueError(f"{what}: {name} must be an integer in 0..{MAX_INT}, got {v!r:.60}")
    return v


def _str(obj: Mapping[str, Any], name: str, *, what: str, optional: bool = False, limit: int | None = None
         ) -> str | None:
    v = obj.get(name)
    if v is None and optional:
        return None
    if not isinstance(v, str) or not v and not optional:
        raise ValueError(f"{what}: {name} must be a non-empty string, got {v!r:.60}")
    limit = limit or MAX_NAME_CHARS.get(name, MAX_PARAM_CHARS)
    if len(v) > limit:
        raise ValueError(f"{what}: {name} is {len(v)} characters, over {limit}")
    if not _storable(v):
        raise ValueError(f"{what}: {name} holds a NUL character or invalid Unicode")
    return v


def _storable(v: str) -> bool:
    """Text both databases store: no NUL (PostgreSQL refuses it), no lone surrogates (not UTF-8)."""
    if "\x00" in v:
        return False
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _size(obj: Mapping[str, Any], limit: int, what: str) -> None:
    try:
        n = len(json.dumps(obj, separators=(",", ":"), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON-serialisable: {exc}") from None
    if n > limit:
        raise ValueError(f"{what} is {n} characters of JSON, over the limit of {limit}")


def _probs(rec: Mapping[str, Any], what: str) -> None:
    probs = rec.get("probs")
    if not isinstance(probs, dict) or not probs or len(probs) > MAX_LABELS:
        raise ValueError(f"{what}: probs must be a label -> probability object of 1-{MAX_LABELS} labels")
    for lab, p in probs.items():
        if not isinstance(lab, str) or not lab or len(lab) > MAX_NAME_CHARS["label"]:
            raise ValueError(f"{what}: probs has a bad label {lab!r:.60}")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not (0.0 <= p <= 1.0):
            raise ValueError(f"{what}: probs[{lab!r}] must be a probability in 0..1, got {p!r:.60}")


def check_record(call_id: str, record: Any) -> dict[str, Any]:
    """A copy of ``record`` fit to archive (without its embedding, ``stream_id`` set); ValueError otherwise."""
    if not isinstance(record, Mapping):
        raise ValueError(f"a record must be an object, got {type(record).__name__}")
    kind = record.get("kind")
    if kind not in RECORD_KINDS:
        raise ValueError(f"unknown record kind {kind!r:.60} (expected one of {', '.join(RECORD_KINDS)})")
    what = f"{kind} record"
    rec = dict(record)
    if not SEGMENT_FIELDS.issuperset(rec):
        for k in DROPPED_FIELDS:
            rec.pop(k, None)
        # every known field is bounded by its own check below: only the others need measuring
        extra = {k: v for k, v in rec.items() if k not in SEGMENT_FIELDS}
        if extra:
            _size(extra, MAX_RECORD_CHARS, what)
    sid = rec.setdefault("stream_id", call_id)
    if not isinstance(sid, str) or not sid or len(sid) > MAX_ID_CHARS:
        raise ValueError(f"{what}: stream_id must be a call id of 1-{MAX_ID_CHARS} characters")
    if kind == "end":
        _size(rec, MAX_RECORD_CHARS, what)
        _int(rec, "segments", what=what, optional=True)
        _num(rec, "duration_s", what=what, optional=True)
        return rec
    _str(rec, "channel", what=what)
    _int(rec, "seq", what=what)
    start, end = _num(rec, "start_s", what=what), _num(rec, "end_s", what=what)
    assert start is not None and end is not None
    if start < 0 or end < start:
        raise ValueError(f"{what}: need 0 <= start_s <= end_s, got {start}..{end}")
    _str(rec, "model", what=what, optional=True)
    if kind == "failure":
        _str(rec, "error", what=what, limit=MAX_ERROR_CHARS)
        return rec
    _str(rec, "label", what=what)
    _num(rec, "confidence", what=what)
    if not isinstance(rec.get("uncertain", False), bool):
        raise ValueError(f"{what}: uncertain must be true or false, got {rec.get('uncertain')!r:.60}")
    _probs(rec, what)
    _int(rec, "history" if kind == "result" else "segments", what=what, optional=kind == "result")
    return rec


def _started(event: Mapping[str, Any], what: str) -> None:
    chans = event.get("channels")
    if not isinstance(chans, list) or not 1 <= len(chans) <= MAX_CHANNELS or not all(
            isinstance(c, str) and c and len(c) <= MAX_NAME_CHARS["channel"] for c in chans):
        raise ValueError(f"{what}: channels must be a list of 1-{MAX_CHANNELS} channel names")
    params = event.get("params", {})
    if not isinstance(params, dict) or len(params) > MAX_PARAMS or not all(
            isinstance(k, str) and len(k) <= MAX_PARAM_CHARS and isinstance(v, (str, int, float, bool))
            and len(str(v)) <= MAX_PARAM_CHARS and _storable(k) and _storable(str(v)) for k, v in params.items()):
        raise ValueError(f"{what}: params must be an object of at most {MAX_PARAMS} short string values")
    labels = event.get("labels", [])
    if not isinstance(labels, list) or len(labels) > MAX_LABELS or not all(isinstance(x, str) for x in labels):
        raise ValueError(f"{what}: labels must be a list of at most {MAX_LABELS} names")
    _str(event, "model", what=what, optional=True)
    _str(event, "source", what=what, optional=True)
    _str(event, "raw_call_id", what=what, optional=True, limit=MAX_ID_CHARS)


def check_event(event: Any) -> dict[str, Any]:
    """A copy of call event ``event`` fit to archive; ValueError (the reason) otherwise."""
    if not isinstance(event, Mapping):
        raise ValueError(f"an event must be an object, got {type(event).__name__}")
    kind = event.get("kind")
    if kind not in ev.KINDS:
        raise ValueError(f"unknown event kind {kind!r:.60} (expected one of {', '.join(ev.KINDS)})")
    what = f"{kind} event"
    _size(event, MAX_EVENT_CHARS, what)
    _str(event, "call_id", what=what, limit=MAX_ID_CHARS)
    _num(event, "ts", what=what)
    if kind == ev.CALL_STARTED:
        _started(event, what)
    elif kind == ev.CALL_ENDED:
        _num(event, "duration_s", what=what)
        _str(event, "reason", what=what, optional=True, limit=32)
        if not isinstance(event.get("dynamics", {}), (dict, type(None))):
            raise ValueError(f"{what}: dynamics must be an object")
    elif kind in (ev.ALERT_OPENED, ev.ALERT_CLOSED):
        _str(event, "rule", what=what)
        _str(event, "channel", what=what)
        _num(event, "since_s", what=what)
        _num(event, "score", what=what, optional=True)
        if kind == ev.ALERT_CLOSED:
            _num(event, "until_s", what=what)
            _str(event, "reason", what=what, optional=True, limit=16)
    elif kind == ev.DYNAMICS:
        _num(event, "at_s", what=what)
        if not isinstance(event.get("channels"), dict):
            raise ValueError(f"{what}: channels must be an object")
    elif kind in (ev.SILENCE, ev.OVERTALK):
        _num(event, "start_s", what=what)
        _num(event, "end_s", what=what)
    return dict(event)
