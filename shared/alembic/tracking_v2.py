"""Version 2 of the shared tables: an outbox row the broker refused for good is set aside with
its reason (`refused_at`, `refused_reason`) so that the relay goes on with the rows after it.
Each service's migration after its tracking_v1 one calls `upgrade()` / `downgrade()`.
Frozen once released, like tracking_v1."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("refused_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("refused_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("refused_reason")
        batch_op.drop_column("refused_at")
