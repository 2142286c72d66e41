"""Ticker: fires the scheduled tasks (what Celery beat did), once per slot, one leader at a time."""
