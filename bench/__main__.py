"""`make bench` / `python -m bench`: runs the benchmarks on the running broker and prints each
figure beside its target. `BENCH=side_by_side` (or `--only`) runs a subset."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import (
    candidates_scale,
    publish_round_trip,
    publisher_throughput,
    retry_accuracy,
    side_by_side,
    sync_scale,
    throttle,
)
from bench.report import Section

Benchmark = Callable[[str, str], Section]
BENCHMARKS: dict[str, Benchmark] = {
    "side_by_side": side_by_side.run,
    "publisher_throughput": publisher_throughput.run,
    "publish_round_trip": publish_round_trip.run,
    "retry_accuracy": retry_accuracy.run,
    "sync_scale": sync_scale.run,
    "candidates_scale": candidates_scale.run,
    "throttle": throttle.run,
}
ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--only",
        default=os.environ.get("BENCH", ""),
        help=f"comma-separated subset of {', '.join(BENCHMARKS)} (default: env BENCH, else all)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("ADFLUX_BENCH_DATABASE_URL", ""),
        help="PostgreSQL server URL: each run gets a fresh database on it (default: SQLite)",
    )
    parser.add_argument(
        "--postgres", action="store_true", help="use the server infra/postgres.sh ensures"
    )
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(BENCHMARKS)
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    database_url = args.database_url
    if args.postgres and not database_url:
        script = ROOT / "infra" / "postgres.sh"
        database_url = subprocess.run(
            [str(script)], check=True, capture_output=True, text=True
        ).stdout.strip()
    bootstrap = os.environ.get("ADFLUX_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    failed = []
    for name in chosen:
        started = time.monotonic()
        print(f"-- {name}: running", flush=True)
        try:
            section = BENCHMARKS[name](bootstrap, database_url)
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        print(section.render())
        print(f"  ({name} took {time.monotonic() - started:.0f} s)", flush=True)
    if failed:
        print(f"benchmarks that did not finish: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
