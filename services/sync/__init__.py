"""Sync: keeps campaign status and metrics in step with Meta Ads and Google Ads."""
