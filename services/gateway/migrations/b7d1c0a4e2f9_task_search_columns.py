"""tasks: campaign and correlation ids, indexed for the console's task search

Revision ID: b7d1c0a4e2f9
Revises: fc4cb596ddac
Create Date: 2026-11-30 01:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "b7d1c0a4e2f9"
down_revision = "fc4cb596ddac"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("campaign_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("correlation_id", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_tasks_campaign_id"), ["campaign_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_tasks_correlation_id"), ["correlation_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tasks_correlation_id"))
        batch_op.drop_index(batch_op.f("ix_tasks_campaign_id"))
        batch_op.drop_column("correlation_id")
        batch_op.drop_column("campaign_id")
