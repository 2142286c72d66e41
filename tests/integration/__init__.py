"""Integration tests: the real Kafka broker and PostgreSQL server."""
