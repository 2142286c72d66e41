"""Publisher: creates campaigns on Meta and Google Ads from `campaign.publish_requested`."""
