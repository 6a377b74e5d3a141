"""The archive's tables (SQLAlchemy Core; PostgreSQL in production, SQLite embedded).

Every call is one row of :data:`calls`; what happened in it hangs off that row by ``call_id`` (the call's
key id, :func:`models.ids.key_id`) and goes with it (``ON DELETE CASCADE``; :func:`archive.store.delete`
also deletes explicitly, so SQLite without foreign-key enforcement leaves nothing behind either).

Times: ``*_ts`` are wall-clock unix seconds (UTC) as floats, portable between both databases and cheap to
bucket by day or week; ``*_s`` are seconds of audio from the call's start, as in the records and events.

Natural keys make every write an idempotent upsert (a replayed stream entry changes nothing):

* :data:`segments`: (``call_id``, ``channel``, ``seq``, ``kind``) -- ``kind`` is ``result``, ``failure``
  or ``turn`` (turns have their own ``seq`` per channel);
* :data:`events`: (``call_id``, ``event_key``) -- ``event_key`` is a digest of the event's canonical JSON
  (:func:`archive.ingest.event_key`): the same event read twice, from either stream, is one row;
* :data:`alerts`: (``call_id``, ``rule``, ``channel``, ``since_s``) -- ``alert_opened`` inserts,
  ``alert_closed`` completes it;
* :data:`speakers`: (``call_id``, ``channel``) and :data:`label_shares`: (``call_id``, ``channel``,
  ``label``) -- recomputed from the call's segments (:mod:`archive.scores`) whenever they change.

Never stored: audio, embeddings.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

#: Schema version the code expects (the newest Alembic revision; ``archive/migrations/versions``).
SCHEMA_REVISION = "0003"

metadata = MetaData()

#: A JSON column where Python ``None`` is SQL NULL (not the JSON text ``null``), so ``IS NULL`` finds it.
NULLABLE_JSON = JSON(none_as_null=True)

#: Roles a channel can have; the headline scores are the customer's.
ROLES = ("agent", "customer")

calls = Table(
    "calls", metadata,
    Column("call_id", String(128), primary_key=True),  # key id (models.ids.key_id)
    Column("raw_id", Text, nullable=False),  # the id as the platform gave it
    Column("source", String(32), nullable=False, server_default=""),  # file, stdin, twilio, audiohook, stream
    Column("status", String(16), nullable=False, server_default="live"),  # live | ended
    Column("end_reason", String(32)),  # completed, incomplete, error, disconnected, lost
    Column("started_ts", Float, nullable=False),
    Column("ended_ts", Float),
    Column("duration_s", Float),
    Column("channels", JSON, nullable=False),  # names in order
    Column("roles", JSON, nullable=False),  # channel -> role (agent/customer) where known
    # metadata, from call_started.params (archive.ingest.META_KEYS says which param names feed each)
    Column("agent", String(128)),
    Column("queue", String(128)),
    Column("direction", String(16)),  # inbound | outbound | internal | (as given)
    Column("tenant", String(128)),
    Column("params", JSON, nullable=False),  # every custom parameter, str -> str
    Column("model", String(128), nullable=False, server_default=""),  # name@version
    Column("model_version", String(32), nullable=False, server_default=""),
    Column("labels", JSON, nullable=False),
    Column("segments", Integer, nullable=False, server_default="0"),  # result records archived
    Column("failed", Integer, nullable=False, server_default="0"),  # failure records archived
    # the call's dynamics totals (the call_ended event's "dynamics", else the newest "dynamics" event)
    Column("dynamics", NULLABLE_JSON),
    Column("talk_s", Float),  # every channel's talk time summed
    Column("non_talk_share", Float),  # non_talk_s / duration_s
    Column("interruptions", Integer),  # all channels
    Column("overtalk_count", Integer),
    Column("silence_count", Integer),
    # headline scores (archive.scores; docs/archive.md "Scores"): the customer's, and the agent's beside them
    Column("customer_score", Float),  # -5..+5
    Column("customer_trend", String(24)),  # archive.scores.TRENDS
    Column("customer_negative_share", Float),  # 0..1
    Column("agent_score", Float),
    Column("agent_trend", String(24)),
    Column("agent_negative_share", Float),
    Column("alerts_fired", Integer, nullable=False, server_default="0"),
    Column("archived_ts", Float, nullable=False),  # first written
    Column("updated_ts", Float, nullable=False),  # last written
)
Index("ix_calls_started", calls.c.started_ts)
Index("ix_calls_agent_started", calls.c.agent, calls.c.started_ts)
Index("ix_calls_queue_started", calls.c.queue, calls.c.started_ts)
Index("ix_calls_tenant_started", calls.c.tenant, calls.c.started_ts)
Index("ix_calls_customer_score", calls.c.customer_score)
#: Revision 0002 (archive.queries): trends, search totals and page ids as index-only scans.
CALLS_COVER = ("started_ts", "agent", "queue", "tenant", "direction", "customer_score", "customer_trend",
               "customer_negative_share", "agent_score", "interruptions", "non_talk_share", "duration_s", "call_id")
Index("ix_calls_started_cover", *(calls.c[name] for name in CALLS_COVER))

def _call_fk() -> ForeignKey:
    return ForeignKey("calls.call_id", ondelete="CASCADE")

speakers = Table(
    "speakers", metadata,
    Column("call_id", String(128), _call_fk(), primary_key=True),
    Column("channel", String(64), primary_key=True),
    Column("role", String(16)),
    Column("segments", Integer, nullable=False, server_default="0"),
    Column("speech_s", Float, nullable=False, server_default="0"),  # summed segment durations
    Column("score", Float),  # -5..+5, null without speech
    Column("quarters", NULLABLE_JSON),  # [q1, q2, q3, q4] scores, null where that quarter has no speech
    Column("trend", String(24)),
    Column("negative_share", Float),
    Column("talk_s", Float),  # from the dynamics totals
    Column("talk_share", Float),
    Column("interruptions", Integer),
)

label_shares = Table(  # a label's duration-weighted probability mass per speaker ("share of a label")
    "label_shares", metadata,
    Column("call_id", String(128), _call_fk(), primary_key=True),
    Column("channel", String(64), primary_key=True),
    Column("label", String(32), primary_key=True),
    Column("role", String(16)),
    Column("share", Float, nullable=False),
)
Index("ix_label_shares_label", label_shares.c.label, label_shares.c.share)

segments = Table(
    "segments", metadata,
    Column("call_id", String(128), _call_fk(), primary_key=True),
    Column("channel", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("kind", String(8), primary_key=True),  # result | failure | turn
    Column("start_s", Float, nullable=False),
    Column("end_s", Float, nullable=False),
    Column("label", String(32)),  # null for failures
    Column("confidence", Float),
    Column("uncertain", Boolean),
    Column("probs", NULLABLE_JSON),  # label -> calibrated probability
    Column("history", Integer),  # earlier segments in the channel's embedding history (result records)
    Column("segments", Integer),  # turns: how many results
    Column("error", Text),  # failures: why
    Column("model", String(128)),
    Column("extra", NULLABLE_JSON),  # any other field the record had (so that nothing of it is lost); null when none
)

events = Table(  # every call event except call_started/call_ended (folded into calls) and trend
    "events", metadata,
    Column("call_id", String(128), _call_fk(), primary_key=True),
    Column("event_key", String(32), primary_key=True),
    Column("kind", String(24), nullable=False),
    Column("ts", Float, nullable=False),
    Column("at_s", Float),  # the event's audio time (at_s, start_s or since_s)
    Column("event", JSON, nullable=False),
)
Index("ix_events_call_kind", events.c.call_id, events.c.kind)

alerts = Table(
    "alerts", metadata,
    Column("call_id", String(128), _call_fk(), primary_key=True),
    Column("rule", String(64), primary_key=True),
    Column("channel", String(64), primary_key=True),
    Column("since_s", Float, primary_key=True),
    Column("until_s", Float),  # null while open
    Column("opened_ts", Float, nullable=False),
    Column("closed_ts", Float),
    Column("score", Float),  # the mean that opened it
    Column("close_reason", String(16)),  # score | call_ended
)
Index("ix_alerts_rule", alerts.c.rule)

dead_letters = Table(  # stream entries the archiver could not archive, and why
    "dead_letters", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("stream", String(256), nullable=False),
    Column("entry_id", String(64), nullable=False),
    Column("call_id", String(128)),  # when known; no foreign key: the call may not exist
    Column("reason", Text, nullable=False),
    Column("payload", Text, nullable=False),  # the entry, truncated to archive.ingest.MAX_DEAD_PAYLOAD chars
    Column("ts", Float, nullable=False),
)
Index("ux_dead_letters_entry", dead_letters.c.stream, dead_letters.c.entry_id, unique=True)


call_days = Table(  # revision 0003: the per-day rollup that trends sum (archive.rollup; no foreign key)
    "call_days", metadata,
    Column("grain", String(24), primary_key=True),  # archive.rollup.GRAINS: "agent", "agent+queue", ...
    Column("day_ts", Float, primary_key=True),  # the UTC day's start (unix s)
    Column("agent", String(128), primary_key=True),  # "" outside the grain, and for calls without one
    Column("queue", String(128), primary_key=True),
    Column("tenant", String(128), primary_key=True),
    Column("calls", Integer, nullable=False),
    *(Column(name, Integer if name.endswith("_n") else Float, nullable=False)
      for name in ("score_n", "score_sum", "neg_n", "neg_sum", "inter_n", "inter_sum", "nt_n", "nt_sum",
                   "base_n", "base_sum")),
)
