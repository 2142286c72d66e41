"""`make bench`: runs every benchmark against the real broker and prints the numbers."""

from __future__ import annotations

import json
import os

from bench import publish_round_trip, retry_accuracy


def main() -> None:
    bootstrap = os.environ.get("ADFLUX_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    database_url = os.environ.get("ADFLUX_BENCH_DATABASE_URL", "")
    results = {
        "publish": publish_round_trip.run(bootstrap, database_url),
        "retry_due_time_accuracy": retry_accuracy.run(bootstrap),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
