"""Ad-platform adapters (docs/platforms.md): the ports the publisher and sync handlers use,
the Meta and Google implementations over the real SDKs, and resumable publishing steps."""
