"""The ML service's settings: the common ones, its health port and the training knobs."""

from __future__ import annotations

from shared.settings import WORKER_METRICS_PORTS, ServiceSettings


class MlSettings(ServiceSettings):
    metrics_port: int = WORKER_METRICS_PORTS["ml"]
    # KMeans seed: the same candidates give the same model.
    ml_random_state: int = 42
    # Upper bound of k when the number of segments is chosen by silhouette.
    ml_max_clusters: int = 8
    # Online assignment of new or changed candidates (the faust agent).
    ml_online_enabled: bool = True
    # Candidate intake: records per poll, and lanes (each lane's share of a poll is one
    # transaction and one bulk upsert).
    ml_intake_batch: int = 5000
    ml_intake_lanes: int = 2
