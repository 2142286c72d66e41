"""What the broker allows without any of AdFlux's bookkeeping: a reference for `side_by_side`."""
