#!/usr/bin/env bash
# Stops what scripts/setup-host.sh started (only that).
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
pidfile="$here/target/host/dockerd.pid"
if [ -f "$pidfile" ]; then
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    echo "teardown: stopping dockerd ($pid)"
    kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
fi
