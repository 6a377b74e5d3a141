"""The archiver: a Redis consumer-group reader of the call events and results streams that writes what it
reads through :mod:`archive.ingest`, acknowledging entries only after the database commit.

One loop (:meth:`Archiver.run`): every ``refresh_s`` read the active-call registry (``ser:calls``,
``ser:calls:ended``) and follow each call's results stream; claim (``XAUTOCLAIM``) what a dead archiver
left pending longer than ``claim_idle_s``; ``XREADGROUP`` new entries of ``ser:events`` and every followed
results stream; write them in one transaction (:func:`archive.ingest.write`, plus a dead letter per entry
that cannot be archived); ``XACK`` them. Several archivers share the group: each entry goes to one of
them, and each finds every call's results stream by itself (registry, events, ``SCAN``).

Nothing lost: an entry is acknowledged only once committed (a database outage is retried with back-off
and holds the batch); a killed archiver's entries stay pending and are claimed. Nothing doubled: every
write is an idempotent upsert, so an entry archived twice (claimed after a commit whose ack was lost)
changes nothing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from archive import follow, ingest
from archive.db import begin_write
from archive.follow import Entry, Item, text
from archive.metrics import ArchiveMetrics
from archive.settings import (
    BACKOFF_FIRST_S,
    BACKOFF_MAX_S,
    CONSUMER_GC_S,
    GROUP,
    LOST_EVERY_S,
    PRUNE_EVERY_S,
    ArchiverSettings,
)
from callevents.schema import CALL_ENDED, CALLS_KEY, ENDED_KEY, EVENTS_KEY
from workers.contract import results_key

log = logging.getLogger(__name__)
REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


def _transient(exc: BaseException) -> bool:
    """A database error worth retrying as it is (connection lost, server down, deadlock, lock timeout),
    as opposed to one entry the database refuses (data too long, a constraint)."""
    return isinstance(exc, (OperationalError, InterfaceError)) or (
        isinstance(exc, DBAPIError) and bool(exc.connection_invalidated))


class Archiver:
    def __init__(self, connection: redis.Redis, engine: Engine, settings: ArchiverSettings, *,
                 metrics: ArchiveMetrics | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.r, self.engine, self.s = connection, engine, settings
        self.consumer = settings.consumer_name
        self.metrics = metrics or ArchiveMetrics()
        self.clock = clock
        self.stopping = threading.Event()
        self.followed: dict[str, float] = {}  # call id -> clock() when followed
        #: calls no longer followed (drained after their end, or their stream gone) -> whether they were
        #: active then; not followed again while registered, unless an ended call becomes active (a re-used id)
        self.retired: dict[str, bool] = {}
        self.active: set[str] = set()
        self.ended: set[str] = set()  # in ser:calls:ended, or its end seen in a stream
        self.run_id: str | None = None
        self.owed = -1  # entries unread or pending at the latest refresh, every stream (-1: not known yet)
        self._due = {"refresh": 0.0, "claim": 0.0, "scan": 0.0, "prune": 0.0, "lost": 0.0}
        self._read_nothing = False
        self.totals = {"archived": 0, "dead_letter": 0}  # entries this process finished, by outcome
        self.redis_ok = False  # the latest Redis call succeeded
        self._seen_redis = False
        self.db_ok = True  # the latest database write succeeded (the engine was opened: it answered)
        self.metrics.db_up.set(1)

    # --- the loop --------------------------------------------------------------------------------
    def stop(self) -> None:
        """Finish the current batch (commit and acknowledge), then return from :meth:`run`."""
        self.stopping.set()

    def ready(self) -> tuple[bool, str]:
        if not self.redis_ok:
            return False, "redis unreachable"
        if not self.db_ok:
            return False, "database unreachable"
        return True, "ready"

    def run(self) -> None:
        """Archive until :meth:`stop` (or, with ``drain``, until nothing is owed)."""
        backoff = BACKOFF_FIRST_S
        while not self.stopping.is_set():
            try:
                self.step()
                backoff = BACKOFF_FIRST_S
            except REDIS_ERRORS as exc:
                self._redis_down(exc, backoff)
                backoff = min(2 * backoff, BACKOFF_MAX_S)
            if self.s.drain and self.owed == 0 and self._read_nothing:
                log.info("drained: nothing unread or pending")
                return

    def _redis(self, ok: bool) -> None:
        if ok and not self.redis_ok and self.run_id is None and self._seen_redis:
            log.info("Redis answers again")
        self._seen_redis = self._seen_redis or ok
        self.redis_ok = ok
        self.metrics.redis_up.set(int(ok))

    def _db(self, ok: bool) -> None:
        if ok and not self.db_ok:  # behind: calls may have left the registries meanwhile, scan for them
            log.info("the database answers again")
            self._due["scan"] = 0.0
        self.db_ok = ok
        self.metrics.db_up.set(int(ok))

    def _redis_down(self, exc: BaseException, wait_s: float) -> None:
        self.metrics.redis_errors.inc()
        if self.redis_ok:  # log the first failure, not every retry
            log.warning("Redis unreachable (%s); retrying", exc)
        self._redis(False)
        self.run_id = None  # check for a restarted (empty) Redis once it answers
        self.stopping.wait(wait_s)

    def step(self) -> int:
        """One round: registry, claims, one read, its write and acknowledgement. Returns entries handled."""
        now = self.clock()
        if now >= self._due["refresh"]:
            self._refresh(now)
        entries: list[Entry] = []
        if now >= self._due["claim"]:
            self._due["claim"] = now + max(0.5, self.s.claim_idle_s / 2)
            entries = self._claim()
        if not entries:
            entries = self._read()
        self._read_nothing = not entries
        if entries:
            self._handle(entries)
        if self.s.retention_days and now >= self._due["prune"]:
            self._due["prune"] = now + PRUNE_EVERY_S
            self._maintain("prune", self._prune)
        if self.s.lost_after_s and self.owed == 0 and now >= self._due["lost"]:  # caught up: silence means lost
            self._due["lost"] = now + LOST_EVERY_S
            self._maintain("lost", self._close_lost)
        return len(entries)

    # --- what to follow --------------------------------------------------------------------------
    def keys(self) -> list[str]:
        return [EVENTS_KEY, *(results_key(c) for c in self.followed)]

    def _follow(self, calls: set[str]) -> None:
        """Follow these calls' results streams: the group on each (the stream made where the call is active
        and has none yet; an ended call without one has nothing left to archive)."""
        new = sorted(c for c in calls if c not in self.followed and c not in self.retired)
        live = [results_key(c) for c in new if c in self.active]
        follow.ensure_groups(self.r, live)
        gone = follow.ensure_groups(self.r, [results_key(c) for c in new if c not in self.active], mkstream=False)
        now = self.clock()
        for c in new:
            if results_key(c) in gone:
                self.retired[c] = False
            else:
                self.followed[c] = now

    def _refresh(self, now: float) -> None:
        self._due["refresh"] = now + self.s.refresh_s
        pipe = self.r.pipeline(transaction=False)
        pipe.info("server")
        pipe.zrange(CALLS_KEY, 0, -1)
        pipe.zrange(ENDED_KEY, 0, -1)
        info, active, ended = pipe.execute()
        self._redis(True)
        if info.get("run_id") != self.run_id:  # first round, or Redis restarted / reconnected
            self._regroup(str(info.get("run_id")))
        self.active = {text(c) for c in active}
        registered = self.active | {text(c) for c in ended}
        self.ended = (self.ended & registered) | {text(c) for c in ended}
        self.retired = {c: was for c, was in self.retired.items()
                        if c in registered and (was or c not in self.active)}  # a re-used call id starts afresh
        self._follow(registered)
        if now >= self._due["scan"]:
            self._due["scan"] = now + self.s.scan_s
            self._scan()
        self._inspect(now)

    def _regroup(self, run_id: str) -> None:
        """(Re)create the group on every stream followed: at start and after Redis lost its keys."""
        if self.run_id is not None:
            log.warning("Redis restarted or reconnected: recreating the consumer group %s", GROUP)
            self.retired.clear()
        follow.ensure_groups(self.r, [EVENTS_KEY, *(results_key(c) for c in self.followed if c in self.active)])
        self.run_id = run_id

    def _scan(self) -> None:
        """Follow results streams that still owe the archive something although no registry names them."""
        found = [k for k in follow.scan_results(self.r) if follow.call_of(k) not in self.followed]
        states = follow.inspect(self.r, found)
        owing = {follow.call_of(k) for k, st in states.items() if st.exists and st.owed}
        calls = {c for c in owing if c}
        for c in calls:
            self.retired.pop(c, None)
        self._follow(calls)
        follow.gc_consumers(self.r, EVENTS_KEY, keep=self.consumer, idle_s=CONSUMER_GC_S)

    def _inspect(self, now: float) -> None:
        """Lag and pending gauges; stop following ended calls whose streams are drained or gone."""
        keys = self.keys()
        states = follow.inspect(self.r, keys)
        ms = follow.server_ms(self.r)
        oldest = [st.oldest_ms for st in states.values() if st.oldest_ms is not None]
        self.metrics.lag.set(max(0.0, (ms - min(oldest)) / 1000) if oldest else 0.0)
        for stream, sel in (("events", [states[EVENTS_KEY]]), ("results", [states[k] for k in keys[1:]])):
            self.metrics.pending.labels(stream, "pending").set(sum(st.pending for st in sel))
            self.metrics.pending.labels(stream, "unread").set(sum(st.unread for st in sel))
        self.owed = sum(st.owed for st in states.values())
        grace_ms = self.s.follow_grace_s * 1000
        for key in keys[1:]:
            call, st = follow.call_of(key) or "", states[key]
            done = not st.exists or (
                (call in self.ended or call not in self.active) and not st.owed
                and ms - (st.last_ms or 0) >= grace_ms and now - self.followed[call] >= self.s.follow_grace_s)
            if done:
                del self.followed[call]
                self.retired[call] = call in self.active
                self.metrics.calls.inc()
        self.metrics.followed.set(len(self.followed))

    # --- reading ---------------------------------------------------------------------------------
    def _claim(self) -> list[Entry]:
        entries, deleted = follow.claim(self.r, self.keys(), consumer=self.consumer,
                                        min_idle_ms=int(self.s.claim_idle_s * 1000), count=self.s.batch_size)
        if deleted:
            pipe = self.r.pipeline(transaction=False)
            for key, ids in deleted.items():
                pipe.xack(key, GROUP, *ids)
            pipe.execute()
        if entries:
            self.metrics.claimed.inc(len(entries))
            log.info("claimed %d entries another archiver left pending", len(entries))
        return entries

    def _read(self) -> list[Entry]:
        try:
            reply: Any = self.r.xreadgroup(GROUP, self.consumer, dict.fromkeys(self.keys(), ">"),
                                      count=self.s.batch_size, block=self.s.block_ms)
        except redis.ResponseError as exc:
            if not follow.is_nogroup(exc):
                raise
            log.warning("a stream lost its consumer group (%s): recreating it", exc)
            follow.ensure_groups(self.r, [EVENTS_KEY])
            gone = follow.ensure_groups(self.r, self.keys()[1:], mkstream=False)
            for key in gone:  # expired or lost with a restarted Redis: _refresh follows it again if live
                self.followed.pop(follow.call_of(key) or "", None)
            return []
        self._redis(True)
        return [(text(key), text(mid), fields) for key, msgs in reply or () for mid, fields in msgs]

    # --- writing ---------------------------------------------------------------------------------
    def _handle(self, entries: list[Entry]) -> None:
        started = time.perf_counter()
        items = [follow.parse(*e, max_bytes=self.s.max_entry_bytes) for e in entries]
        if not self._commit(items):
            return  # stopping during a database outage: not acknowledged, another archiver claims them
        self._ack(items)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        calls = set()
        for it in items:
            stream = "events" if it.stream == EVENTS_KEY else "results"
            outcome = "dead_letter" if it.reason else "archived"
            self.metrics.entries.labels(stream, outcome).inc()
            self.totals[outcome] += 1
            if it.reason:
                log.warning("dead letter %s %s: %s", it.stream, it.entry_id, it.reason)
            elif it.event is not None and it.call_id:
                calls.add(it.call_id)
                if it.event.get("kind") == CALL_ENDED:
                    self.ended.add(it.call_id)
            elif it.record is not None and it.record.get("kind") == "end" and it.call_id:
                self.ended.add(it.call_id)
        self._follow(calls)

    def _fill(self, conn: Any, items: list[Item]) -> None:
        """Write ``items`` in ``conn``'s transaction; an entry ingest refuses becomes a dead letter."""
        batch = ingest.Batch()
        for it in items:
            if it.reason is None:
                try:
                    if it.event is not None:
                        batch.add_event(it.event)
                    elif it.record is not None and it.call_id is not None:
                        batch.add_record(it.call_id, it.record)
                except ValueError as exc:
                    it.reason = f"refused: {exc}"[:500]
                    it.payload = it.event if it.event is not None else it.record
        ingest.write(conn, batch)
        for it in items:
            if it.reason is not None:
                ingest.dead_letter(conn, stream=it.stream, entry_id=it.entry_id, reason=it.reason,
                                   payload=json.dumps(it.payload, default=str), call_id=it.call_id)

    def _commit(self, items: list[Item]) -> bool:
        """Commit ``items`` (retrying a database outage with back-off); False when asked to stop meanwhile."""
        backoff = BACKOFF_FIRST_S
        while True:
            try:
                try:
                    with begin_write(self.engine) as conn:
                        self._fill(conn, items)
                except SQLAlchemyError as exc:
                    if _transient(exc) or len(items) == 1:
                        raise
                    log.warning("a batch of %d entries was refused (%s): writing them one by one",
                                len(items), " ".join(str(exc).split())[:200])
                    self._commit_each(items)
                self._db(True)
                return True
            except SQLAlchemyError as exc:
                self.metrics.db_errors.inc()
                if self.db_ok:  # log the first failure, not every retry
                    log.warning("database write failed (%s); retrying, nothing acknowledged",
                                " ".join(str(exc).split())[:200])
                self._db(False)
                self._keep_watch()
                if self.stopping.is_set() and backoff > BACKOFF_FIRST_S:
                    log.warning("stopping with %d entries unwritten: they stay pending for another archiver",
                                len(items))
                    return False
                self.stopping.wait(backoff)
                backoff = min(2 * backoff, BACKOFF_MAX_S)

    def _keep_watch(self) -> None:
        """While a database outage holds the batch: keep the lag and pending gauges current (the alert)."""
        now = self.clock()
        if now >= self._due["refresh"]:
            try:
                self._refresh(now)
            except REDIS_ERRORS as exc:
                self._redis(False)
                log.debug("Redis unreachable too (%s)", exc)

    def _commit_each(self, items: list[Item]) -> None:
        """One transaction per entry: the one the database refuses becomes a dead letter with the reason."""
        for it in items:
            try:
                with begin_write(self.engine) as conn:
                    self._fill(conn, [it])
            except SQLAlchemyError as exc:
                if _transient(exc):
                    raise
                it.reason = "database refused it: " + " ".join(str(exc).split())[:400]
                it.payload = it.event if it.event is not None else it.record
                with begin_write(self.engine) as conn:
                    ingest.dead_letter(conn, stream=it.stream, entry_id=it.entry_id, reason=it.reason,
                                       payload=json.dumps(it.payload, default=str), call_id=it.call_id)

    def _ack(self, items: list[Item]) -> None:
        by_stream: dict[str, list[str]] = {}
        for it in items:
            by_stream.setdefault(it.stream, []).append(it.entry_id)
        pipe = self.r.pipeline(transaction=False)
        for key, ids in by_stream.items():
            pipe.xack(key, GROUP, *ids)
        for res in pipe.execute(raise_on_error=False):
            if isinstance(res, Exception) and not follow.is_nogroup(res):
                raise res  # NOGROUP: Redis lost the stream meanwhile; nothing left to acknowledge

    def _maintain(self, name: str, job: Callable[[Any], None]) -> None:
        """Run a periodic database job in its own transaction; after a failure, again in a minute."""
        try:
            with begin_write(self.engine) as conn:
                job(conn)
        except SQLAlchemyError as exc:
            self.metrics.db_errors.inc()
            self._due[name] = self.clock() + 60.0
            log.warning("%s failed (%s)", name, " ".join(str(exc).split())[:200])

    def _prune(self, conn: Any) -> None:
        from archive import queries

        gone = queries.prune(conn, older_than_s=self.s.retention_days * 86400.0)
        if gone:
            log.info("pruned %d calls older than %g days", gone, self.s.retention_days)

    def _close_lost(self, conn: Any) -> None:
        """End archived calls still live whose rows nothing has written for ``lost_after_s`` (their producer
        died without a call_ended), once this archiver owes nothing: reason ``lost``, scored."""
        closed = ingest.close_lost(conn, idle_s=self.s.lost_after_s, now=time.time())
        if closed:
            log.info("closed %d calls as lost (nothing for %g s): %s", len(closed), self.s.lost_after_s,
                     ", ".join(closed[:10]))
