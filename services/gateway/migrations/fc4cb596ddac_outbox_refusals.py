"""outbox rows the broker refused are set aside with their reason (tracking_v2)

Revision ID: fc4cb596ddac
Revises: 376529bf0b9d
Create Date: 2026-11-30 00:28:14.263598
"""

from __future__ import annotations

from shared.alembic import tracking_v2

revision = "fc4cb596ddac"
down_revision = "376529bf0b9d"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tracking_v2.upgrade()


def downgrade() -> None:
    tracking_v2.downgrade()
