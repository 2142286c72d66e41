"""outbox rows the broker refused are set aside with their reason (tracking_v2)

Revision ID: c97aec23a4c9
Revises: b8c748eda7d5
Create Date: 2026-11-30 00:28:14.263798
"""

from __future__ import annotations

from shared.alembic import tracking_v2

revision = "c97aec23a4c9"
down_revision = "b8c748eda7d5"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tracking_v2.upgrade()


def downgrade() -> None:
    tracking_v2.downgrade()
