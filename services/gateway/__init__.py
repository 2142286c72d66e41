"""Gateway: the HTTP API, its command outbox, and the task/campaign read model."""
