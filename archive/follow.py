"""Redis side of the archiver: the consumer group on a stream, what a stream still owes the archive
(unread and pending entries, their age), claiming what a dead archiver left pending, and an entry as
read turned into what goes to the database (:func:`parse`: an event, a record or a dead letter).

Stream ids are ``<ms>-<n>`` with the Redis server's clock in milliseconds: an entry's age is the server's
``TIME`` minus its id's first part, whatever the archiver's own clock says.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from archive.settings import GROUP
from callevents.schema import decode_event
from workers.contract import RESULTS_PREFIX, RESULTS_TTL_S, decode_entry

#: One stream entry as read: (stream key, entry id, fields).
Entry = tuple[str, str, dict[bytes, bytes]]


def text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def id_ms(entry_id: Any) -> int:
    """The millisecond time part of a stream id."""
    return int(text(entry_id).split("-", 1)[0])


def call_of(key: str) -> str | None:
    """The call (key id) whose results stream ``key`` is; None for any other stream."""
    return key[len(RESULTS_PREFIX):] if key.startswith(RESULTS_PREFIX) else None


@dataclass
class Item:
    """One entry on its way to the database: an event, a record, or a dead letter (``reason``)."""

    stream: str
    entry_id: str
    call_id: str | None
    event: dict[str, Any] | None = None
    record: dict[str, Any] | None = None
    reason: str | None = None
    payload: Any = None


def _payload(fields: dict[bytes, bytes]) -> dict[str, str]:
    """An entry's fields as text for a dead letter (never its embedding)."""
    return {text(k): text(v) for k, v in fields.items() if text(k) != "embedding"}


def parse(key: str, entry_id: str, fields: dict[bytes, bytes], *, max_bytes: int) -> Item:
    """One entry as read -> an :class:`Item`: the event or record it holds, or a dead letter with the reason
    (larger than ``max_bytes``, malformed). A record's embedding is dropped, wherever a producer put it."""
    call = call_of(key)
    size = sum(len(k) + len(v) for k, v in fields.items() if k != b"embedding")
    if size > max_bytes:
        return Item(key, entry_id, call, reason=f"entry of {size} bytes exceeds the {max_bytes}-byte limit",
                    payload=_payload(fields))
    try:
        if call is None:
            event = decode_event(fields)
            if not isinstance(event.get("call_id"), str) or not event["call_id"]:
                raise ValueError("event has no call_id")
            return Item(key, entry_id, event["call_id"], event=event)
        record = decode_entry(fields)  # without the embedding field
        record.pop("embedding", None)
        return Item(key, entry_id, call, record=record)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        return Item(key, entry_id, call, reason=f"malformed entry: {exc}"[:500], payload=_payload(fields))


def is_nogroup(exc: BaseException) -> bool:
    return isinstance(exc, redis.ResponseError) and "NOGROUP" in str(exc)


def ensure_groups(r: redis.Redis, keys: Sequence[str], *, mkstream: bool = True) -> set[str]:
    """Create the group on each stream, from its first entry, and return the keys that do not exist
    (only without ``mkstream``; with it a stream not written yet is made, empty). A stream the group
    created gets an expiry (:data:`~workers.contract.RESULTS_TTL_S`): the archiver never leaves a key
    without one. An existing group (``BUSYGROUP``) is kept as it is."""
    if not keys:
        return set()
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.xgroup_create(key, GROUP, id="0", mkstream=mkstream)
        pipe.ttl(key)
    out = pipe.execute(raise_on_error=False)
    fix = r.pipeline(transaction=False)
    missing = set()
    for key, created, ttl in zip(keys, out[0::2], out[1::2], strict=True):
        if isinstance(created, Exception) and "BUSYGROUP" not in str(created):
            if "requires the key to exist" in str(created) and not mkstream:
                missing.add(key)
                continue
            raise created
        if ttl == -1 and key.startswith(RESULTS_PREFIX):  # no expiry: we made it, or someone forgot
            fix.expire(key, RESULTS_TTL_S)
    if len(fix):
        fix.execute()
    return missing


@dataclass(frozen=True)
class StreamState:
    """What a stream still owes the group."""

    exists: bool
    pending: int = 0  # delivered to an archiver, not acknowledged
    unread: int = 0  # not delivered yet (an estimate where Redis cannot say: at least 1)
    oldest_ms: int | None = None  # id time of the oldest pending or unread entry
    last_ms: int | None = None  # id time of the newest entry

    @property
    def owed(self) -> int:
        return self.pending + self.unread


def _group(groups: Any) -> dict[str, Any] | None:
    for g in groups if isinstance(groups, list) else ():
        if text(g.get("name")) == GROUP:
            return g
    return None


def inspect(r: redis.Redis, keys: Sequence[str]) -> dict[str, StreamState]:
    """Each stream's :class:`StreamState` for the group (two pipelined round trips)."""
    if not keys:
        return {}
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.xinfo_stream(key)
        pipe.xinfo_groups(key)
        pipe.xpending(key, GROUP)
    out = pipe.execute(raise_on_error=False)
    partial: dict[str, tuple[Any, ...]] = {}
    firsts = r.pipeline(transaction=False)
    for i, key in enumerate(keys):
        info, groups, pend = out[3 * i: 3 * i + 3]
        if isinstance(info, Exception):  # no such key
            partial[key] = ()
            continue
        group = _group(groups)
        last_gen = text(info.get("last-generated-id") or "0-0")
        delivered = text(group.get("last-delivered-id") or "0-0") if group else "0-0"
        pending = int(pend.get("pending") or 0) if isinstance(pend, dict) else 0
        oldest = id_ms(pend["min"]) if pending and pend.get("min") else None
        last = info.get("last-entry")
        unread = 0
        if _after(last_gen, delivered) and last:  # something was added since the last delivery
            lag = group.get("lag") if group else None
            unread = int(lag) if isinstance(lag, int) and lag > 0 else (int(info.get("length") or 0) if not group
                                                                         else 1)
            firsts.xrange(key, min="(" + delivered, count=1)
        partial[key] = (pending, unread, oldest, id_ms(last[0]) if last else None)
    heads = iter(firsts.execute() if len(firsts) else ())
    states = {}
    for key, parts in partial.items():
        if not parts:
            states[key] = StreamState(exists=False)
            continue
        pending, unread, oldest, last_ms = parts
        if unread:
            head = next(heads)
            if head:
                first = id_ms(head[0][0])
                oldest = first if oldest is None else min(oldest, first)
            else:
                unread = 0  # the entries after the last delivery were deleted
        states[key] = StreamState(exists=True, pending=pending, unread=unread, oldest_ms=oldest, last_ms=last_ms)
    return states


def _after(a: str, b: str) -> bool:
    """Stream id ``a`` is later than ``b``."""
    am, _, an = a.partition("-")
    bm, _, bn = b.partition("-")
    return (int(am), int(an or 0)) > (int(bm), int(bn or 0))


def server_ms(r: redis.Redis) -> int:
    sec, usec = r.time()
    return int(sec) * 1000 + int(usec) // 1000


def claim(r: redis.Redis, keys: Iterable[str], *, consumer: str, min_idle_ms: int,
          count: int) -> tuple[list[Entry], dict[str, list[str]]]:
    """Entries pending longer than ``min_idle_ms`` on ``keys`` (any consumer's), now ``consumer``'s
    (``XAUTOCLAIM``, following its cursor up to ``count`` entries a stream), and the ids Redis reports
    as deleted meanwhile (Redis >= 7 lists them apart; they hold nothing to archive: acknowledge them).

    redis-py's ``justid`` form drops the cursor (redis-py #2226): the full form is used."""
    entries: list[Entry] = []
    deleted: dict[str, list[str]] = {}
    for key in keys:
        start, got = "0-0", 0
        while got < count:
            try:
                reply = r.xautoclaim(key, GROUP, consumer, min_idle_ms, start_id=start, count=count - got)
            except redis.ResponseError as exc:
                if is_nogroup(exc) or "no such key" in str(exc).lower():
                    break
                raise
            cursor, messages = text(reply[0]), reply[1]
            gone = [text(i) for i in (reply[2] if len(reply) > 2 else ())]
            for mid, fields in messages:
                if mid is None or fields is None:  # Redis 6.2: a deleted entry comes back as nil
                    continue
                entries.append((key, text(mid), fields))
            if gone:
                deleted.setdefault(key, []).extend(gone)
            got += len(messages) + len(gone)
            if cursor == "0-0":
                break
            start = cursor
    return entries, deleted


def scan_results(r: redis.Redis) -> list[str]:
    """Every results stream key in Redis (``SCAN``, not ``KEYS``)."""
    return sorted({text(k) for k in r.scan_iter(match=RESULTS_PREFIX + "*", count=1000, _type="stream")})


def gc_consumers(r: redis.Redis, key: str, *, keep: str, idle_s: float) -> int:
    """Delete consumers of the group on ``key`` idle more than ``idle_s`` with nothing pending (every
    restarted archiver is a new consumer); returns how many."""
    gone = 0
    try:
        consumers = r.xinfo_consumers(key, GROUP)
    except redis.ResponseError:
        return 0
    for c in consumers:
        name = text(c.get("name"))
        if name != keep and int(c.get("pending") or 0) == 0 and int(c.get("idle") or 0) > idle_s * 1000:
            r.xgroup_delconsumer(key, GROUP, name)
            gone += 1
    return gone
