#!/usr/bin/env bash
# Install what the container targets and tests use, from Debian's packages, when absent:
# podman (netavark, aardvark-dns, iptables for netavark, runc, uidmap), mmdebstrap for the
# local Debian base images, and Debian's prometheus (the `make observe` server and promtool).
# Nothing is configured in /etc: podman reads infra/images/containers.conf (CONTAINERS_CONF).
set -euo pipefail
needed=()
for pair in podman:podman netavark:/usr/lib/podman/netavark aardvark-dns:/usr/lib/podman/aardvark-dns \
  iptables:iptables runc:runc uidmap:newuidmap mmdebstrap:mmdebstrap prometheus:promtool; do
  package="${pair%%:*}" command="${pair#*:}"
  command -v "$command" >/dev/null 2>&1 || [ -x "$command" ] || needed+=("$package")
done
if [ "${#needed[@]}" -gt 0 ]; then
  echo "podman.sh: installing ${needed[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  # policy-rc.d: install the packages without starting their daemons (prometheus has one).
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; made_policy=1; fi
  apt-get install -y -qq --no-install-recommends "${needed[@]}" >/dev/null || { [ "$made_policy" = 1 ] && rm -f "$policy"; exit 1; }
  [ "$made_policy" = 1 ] && rm -f "$policy"
fi
exit 0
