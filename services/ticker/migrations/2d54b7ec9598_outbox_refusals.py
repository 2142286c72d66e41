"""outbox rows the broker refused are set aside with their reason (tracking_v2)

Revision ID: 2d54b7ec9598
Revises: a32131780854
Create Date: 2026-11-30 00:28:14.264030
"""

from __future__ import annotations

from shared.alembic import tracking_v2

revision = "2d54b7ec9598"
down_revision = "a32131780854"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tracking_v2.upgrade()


def downgrade() -> None:
    tracking_v2.downgrade()
