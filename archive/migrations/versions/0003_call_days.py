"""The per-day rollup that ``trends`` sums (``call_days``; archive/rollup.py, docs/archive.md "Trends rollup"),
filled from the calls already archived.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SUMS = ("score_n", "score_sum", "neg_n", "neg_sum", "inter_n", "inter_sum", "nt_n", "nt_sum", "base_n", "base_sum")


def upgrade() -> None:
    from archive import rollup

    op.create_table(
        "call_days",
        sa.Column("grain", sa.String(length=24), nullable=False),
        sa.Column("day_ts", sa.Float(), nullable=False),
        sa.Column("agent", sa.String(length=128), nullable=False),
        sa.Column("queue", sa.String(length=128), nullable=False),
        sa.Column("tenant", sa.String(length=128), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        *(sa.Column(name, sa.Integer() if name.endswith("_n") else sa.Float(), nullable=False) for name in SUMS),
        sa.PrimaryKeyConstraint("grain", "day_ts", "agent", "queue", "tenant"),
    )
    rollup.rebuild(op.get_bind())


def downgrade() -> None:
    op.drop_table("call_days")
