"""Ad-platform sandbox: simulates the Meta Graph API (HTTP) and Google Ads API (gRPC)."""
