"""Alembic environment and the frozen migration helpers every service shares."""
