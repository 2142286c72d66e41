"""Unit tests: pure logic, no broker, no database."""
