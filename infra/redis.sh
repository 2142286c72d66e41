#!/usr/bin/env bash
# Ensure Debian's redis-server is installed (the Celery baseline of `make bench` runs its own
# instance on a free loopback port): install the package when absent, never start its system
# service. Prints the path of the redis-server binary.
set -euo pipefail

if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis: installing Debian's redis-server" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends redis-server >&2
fi
command -v redis-server
