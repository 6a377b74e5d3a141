"""Indexes for ser-calls' and the dashboard's queries at scale (docs/archive.md, "Indexes and query plans").

``ix_calls_started_cover``: the start time followed by every column that ``trends`` reads and that the
filters and sort keys of ``search`` use, and the call id: trends over a time range, a search's total and
the ids of its page are index-only scans of a narrow index instead of reads of the wide ``calls`` rows
(JSON channels, params, labels, dynamics); only the page's rows are then read.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-08
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

#: archive.schema.CALLS_COVER at this revision.
COVER = ["started_ts", "agent", "queue", "tenant", "direction", "customer_score", "customer_trend",
         "customer_negative_share", "agent_score", "interruptions", "non_talk_share", "duration_s", "call_id"]


def upgrade() -> None:
    op.create_index("ix_calls_started_cover", "calls", COVER)


def downgrade() -> None:
    op.drop_index("ix_calls_started_cover", table_name="calls")
