"""A call id used again (a platform's reconnect, a forked Twilio stream) becomes a distinct stream
of the call: ``<id>``, ``<id>#2``, ``<id>#3``... (docs/gateway.md, "Reconnects and forked streams").
Blocking (Redis): the hub runs it in its thread pool."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Container
from typing import Any

from models.ids import key_id
from workers.contract import RESULTS_TTL_S, claims_key

log = logging.getLogger("ser.gateway")
#: Most streams (sessions) of one call id.
MAX_STREAMS = 100
#: Field of a stream's claims hash that reserves the stream for one session.
STREAM_OWNER_FIELD = "session"


class CallRefused(Exception):
    """A call that cannot start (its id has :data:`MAX_STREAMS` streams already)."""


def claim_stream(connection: Any, live: Container[str], raw: str) -> str:
    """The raw id of this session's stream of call ``raw`` (docs/gateway.md, "Reconnects and
    forked streams"): ``raw`` itself for the call's first session, ``raw#2``, ``raw#3``... for the
    next ones (live here, or whose claims hash in Redis is still there: live or ended less than
    :data:`~workers.contract.RESULTS_TTL_S` ago on any gateway). Taken atomically with ``HSETNX``
    on the stream's claims hash (the producer's own key family and commands)."""
    for n in range(1, MAX_STREAMS + 1):
        stream = raw if n == 1 else f"{raw}#{n}"
        if key_id(stream) in live:
            continue
        if connection is None:
            return stream
        try:
            pipe = connection.pipeline(transaction=True)
            pipe.hsetnx(claims_key(stream), STREAM_OWNER_FIELD, str(uuid.uuid4()))
            pipe.expire(claims_key(stream), RESULTS_TTL_S)
            taken = pipe.execute()[0]
        except Exception as exc:  # redis.RedisError, OSError: the session's own retries decide later
            log.warning("call %s: stream not reserved (Redis: %s); using %s", key_id(raw), exc, key_id(stream))
            return stream
        if taken:
            return stream
    raise CallRefused(f"call {key_id(raw)} has {MAX_STREAMS} streams already")
