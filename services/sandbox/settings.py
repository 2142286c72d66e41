"""The sandbox's settings: where it listens, its random seed and default faults."""

from __future__ import annotations

from shared.settings import ServiceSettings


class SandboxSettings(ServiceSettings):
    sandbox_host: str = "127.0.0.1"
    sandbox_meta_port: int = 8010
    sandbox_google_port: int = 8011
    sandbox_seed: int = 0
    # JSON list of fault rules applied from start-up, e.g.
    # [{"platform": "meta", "operation": "*", "kind": "transient", "rate": 0.1}]
    sandbox_faults: str = ""
    sandbox_google_api_version: str = "v26"
