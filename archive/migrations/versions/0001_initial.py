"""The archive's first schema: calls, speakers, label_shares, segments, events, alerts, dead_letters.

Revision ID: 0001
Revises:
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _call_fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["call_id"], ["calls.call_id"], ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("call_id", sa.String(length=128), nullable=False),
        sa.Column("raw_id", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=32), server_default="", nullable=False),
        sa.Column("status", sa.String(length=16), server_default="live", nullable=False),
        sa.Column("end_reason", sa.String(length=32), nullable=True),
        sa.Column("started_ts", sa.Float(), nullable=False),
        sa.Column("ended_ts", sa.Float(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("agent", sa.String(length=128), nullable=True),
        sa.Column("queue", sa.String(length=128), nullable=True),
        sa.Column("direction", sa.String(length=16), nullable=True),
        sa.Column("tenant", sa.String(length=128), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("model", sa.String(length=128), server_default="", nullable=False),
        sa.Column("model_version", sa.String(length=32), server_default="", nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("segments", sa.Integer(), server_default="0", nullable=False),
        sa.Column("failed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("dynamics", sa.JSON(), nullable=True),
        sa.Column("talk_s", sa.Float(), nullable=True),
        sa.Column("non_talk_share", sa.Float(), nullable=True),
        sa.Column("interruptions", sa.Integer(), nullable=True),
        sa.Column("overtalk_count", sa.Integer(), nullable=True),
        sa.Column("silence_count", sa.Integer(), nullable=True),
        sa.Column("customer_score", sa.Float(), nullable=True),
        sa.Column("customer_trend", sa.String(length=24), nullable=True),
        sa.Column("customer_negative_share", sa.Float(), nullable=True),
        sa.Column("agent_score", sa.Float(), nullable=True),
        sa.Column("agent_trend", sa.String(length=24), nullable=True),
        sa.Column("agent_negative_share", sa.Float(), nullable=True),
        sa.Column("alerts_fired", sa.Integer(), server_default="0", nullable=False),
        sa.Column("archived_ts", sa.Float(), nullable=False),
        sa.Column("updated_ts", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("call_id"),
    )
    op.create_index("ix_calls_started", "calls", ["started_ts"])
    op.create_index("ix_calls_agent_started", "calls", ["agent", "started_ts"])
    op.create_index("ix_calls_queue_started", "calls", ["queue", "started_ts"])
    op.create_index("ix_calls_tenant_started", "calls", ["tenant", "started_ts"])
    op.create_index("ix_calls_customer_score", "calls", ["customer_score"])
    op.create_table(
        "speakers",
        sa.Column("call_id", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=True),
        sa.Column("segments", sa.Integer(), server_default="0", nullable=False),
        sa.Column("speech_s", sa.Float(), server_default="0", nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("quarters", sa.JSON(), nullable=True),
        sa.Column("trend", sa.String(length=24), nullable=True),
        sa.Column("negative_share", sa.Float(), nullable=True),
        sa.Column("talk_s", sa.Float(), nullable=True),
        sa.Column("talk_share", sa.Float(), nullable=True),
        sa.Column("interruptions", sa.Integer(), nullable=True),
        _call_fk(),
        sa.PrimaryKeyConstraint("call_id", "channel"),
    )
    op.create_table(
        "label_shares",
        sa.Column("call_id", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=32), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=True),
        sa.Column("share", sa.Float(), nullable=False),
        _call_fk(),
        sa.PrimaryKeyConstraint("call_id", "channel", "label"),
    )
    op.create_index("ix_label_shares_label", "label_shares", ["label", "share"])
    op.create_table(
        "segments",
        sa.Column("call_id", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("start_s", sa.Float(), nullable=False),
        sa.Column("end_s", sa.Float(), nullable=False),
        sa.Column("label", sa.String(length=32), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("uncertain", sa.Boolean(), nullable=True),
        sa.Column("probs", sa.JSON(), nullable=True),
        sa.Column("history", sa.Integer(), nullable=True),
        sa.Column("segments", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("model", sa.String(length=128), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=True),
        _call_fk(),
        sa.PrimaryKeyConstraint("call_id", "channel", "seq", "kind"),
    )
    op.create_table(
        "events",
        sa.Column("call_id", sa.String(length=128), nullable=False),
        sa.Column("event_key", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("at_s", sa.Float(), nullable=True),
        sa.Column("event", sa.JSON(), nullable=False),
        _call_fk(),
        sa.PrimaryKeyConstraint("call_id", "event_key"),
    )
    op.create_index("ix_events_call_kind", "events", ["call_id", "kind"])
    op.create_table(
        "alerts",
        sa.Column("call_id", sa.String(length=128), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("since_s", sa.Float(), nullable=False),
        sa.Column("until_s", sa.Float(), nullable=True),
        sa.Column("opened_ts", sa.Float(), nullable=False),
        sa.Column("closed_ts", sa.Float(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("close_reason", sa.String(length=16), nullable=True),
        _call_fk(),
        sa.PrimaryKeyConstraint("call_id", "rule", "channel", "since_s"),
    )
    op.create_index("ix_alerts_rule", "alerts", ["rule"])
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("stream", sa.String(length=256), nullable=False),
        sa.Column("entry_id", sa.String(length=64), nullable=False),
        sa.Column("call_id", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ux_dead_letters_entry", "dead_letters", ["stream", "entry_id"], unique=True)


def downgrade() -> None:
    for table in ("dead_letters", "alerts", "events", "segments", "label_shares", "speakers", "calls"):
        op.drop_table(table)
