#!/usr/bin/env bash
# Runs a command with the host prepared (scripts/setup-host.sh) and stops
# afterwards whatever the setup started.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/scripts/setup-host.sh"
trap 'bash "$here/scripts/teardown-host.sh"' EXIT
"$@"
