"""outbox rows the broker refused are set aside with their reason (tracking_v2)

Revision ID: a224406ae979
Revises: cea2c3a11b1a
Create Date: 2026-11-30 00:28:14.263982
"""

from __future__ import annotations

from shared.alembic import tracking_v2

revision = "a224406ae979"
down_revision = "cea2c3a11b1a"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tracking_v2.upgrade()


def downgrade() -> None:
    tracking_v2.downgrade()
