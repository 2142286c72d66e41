"""`python -m services.sandbox`: the Graph API (HTTP) and Google Ads (gRPC) simulators,
sharing one state and one set of fault rules, until SIGTERM."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import uvicorn

from services.sandbox.app import build_graph_app
from services.sandbox.faults import FaultInjector
from services.sandbox.google import start_google_server
from services.sandbox.settings import SandboxSettings
from services.sandbox.state import SandboxState
from shared.logging import configure_logging
from shared.settings import get_settings

log = logging.getLogger(__name__)


def main() -> None:
    settings = get_settings(SandboxSettings)
    configure_logging("sandbox", settings.log_level, settings.log_json)
    # The HTTP loop, its thread pool and the gRPC workers share the GIL: hand it over within
    # 1 ms rather than 5, or each answer waits out other threads' whole slices.
    sys.setswitchinterval(0.001)
    state = SandboxState(
        settings.sandbox_seed,
        Path(settings.data_dir) / "sandbox-ids",
        settings.sandbox_google_api_version,
    )
    faults = FaultInjector.from_env(settings.sandbox_faults, settings.sandbox_seed)
    google = start_google_server(
        state,
        faults,
        settings.sandbox_host,
        settings.sandbox_google_port,
        settings.sandbox_google_api_version,
    )
    log.info(
        "sandbox: Graph API on %s:%d, Google Ads on %s:%d",
        settings.sandbox_host,
        settings.sandbox_meta_port,
        settings.sandbox_host,
        settings.sandbox_google_port,
    )
    try:
        uvicorn.run(
            build_graph_app(state, faults),
            host=settings.sandbox_host,
            port=settings.sandbox_meta_port,
            log_config=None,
            access_log=False,
        )
    finally:
        google.stop(grace=2)


if __name__ == "__main__":
    main()
