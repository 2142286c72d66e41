"""AdFlux's common library: settings, envelope, Kafka bus, database, metrics, logging."""
