#!/usr/bin/env bash
# Install Debian's chromium and chromium-driver (the console's browser test drives them with
# Selenium) when absent. Nothing is configured in /etc.
set -euo pipefail
needed=()
for pair in chromium:chromium chromium-driver:chromedriver; do
  package="${pair%%:*}" command="${pair#*:}"
  command -v "$command" >/dev/null 2>&1 || needed+=("$package")
done
if [ "${#needed[@]}" -gt 0 ]; then
  echo "chromium.sh: installing ${needed[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${needed[@]}" >/dev/null
fi
exit 0
