"""Ad-platform adapters: the outside world the publisher and sync handlers talk to."""
