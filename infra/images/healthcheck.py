"""The services image's HEALTHCHECK: exit 0 when the service's readiness URL answers 200.

The URL is `ADFLUX_HEALTH_URL` (compose.yaml sets it per service); the default is the
gateway's /readyz, the image's default command.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def main() -> int:
    url = os.environ.get("ADFLUX_HEALTH_URL", "http://127.0.0.1:8000/readyz")
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return 0 if response.status == 200 else 1
    except OSError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
