#!/usr/bin/env bash
# Write server.properties from the KAFKA_* environment (as apache/kafka does: `_` -> `.`,
# `__` -> `_`, `___` -> `-`), format the storage once, then exec the broker as PID 1 (the
# JVM stops cleanly on SIGTERM).
set -euo pipefail
: "${CLUSTER_ID:?set CLUSTER_ID (22 characters, base64 of 16 bytes)}"
config=/var/lib/kafka/server.properties
: >"$config"
while IFS='=' read -r name value; do
  case "$name" in KAFKA_HEAP_OPTS | KAFKA_JVM_OPTS) continue ;; esac
  key=$(printf '%s' "${name#KAFKA_}" | tr '[:upper:]' '[:lower:]' \
    | sed -e 's/___/-/g' -e 's/__/@/g' -e 's/_/./g' -e 's/@/_/g')
  printf '%s=%s\n' "$key" "$value" >>"$config"
done < <(env | grep '^KAFKA_')
java_cmd=(java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -XX:+UseG1GC
  -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties -Djava.awt.headless=true
  -cp '/opt/kafka/libs/*')
if [ ! -e "${KAFKA_LOG_DIRS}/meta.properties" ]; then
  "${java_cmd[@]}" kafka.tools.StorageTool format -t "$CLUSTER_ID" -c "$config" --ignore-formatted >/dev/null
fi
exec "${java_cmd[@]}" kafka.Kafka "$config"
