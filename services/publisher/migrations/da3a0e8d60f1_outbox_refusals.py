"""outbox rows the broker refused are set aside with their reason (tracking_v2)

Revision ID: da3a0e8d60f1
Revises: 73caca260093
Create Date: 2026-11-30 00:28:14.263920
"""

from __future__ import annotations

from shared.alembic import tracking_v2

revision = "da3a0e8d60f1"
down_revision = "73caca260093"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tracking_v2.upgrade()


def downgrade() -> None:
    tracking_v2.downgrade()
