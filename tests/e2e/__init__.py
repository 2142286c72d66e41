"""End-to-end tests: services run as processes, as a user runs them."""
