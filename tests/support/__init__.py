"""Helpers the tests share: waiting on conditions, ports, service processes, Kafka reads."""
