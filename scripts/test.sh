#!/usr/bin/env bash
# Builds everything and runs the whole test suite (called by `make test`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins --tests
bash scripts/build-test-images.sh
export MEZZO_BIN_DIR="$PWD/target/debug"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast -- --test-threads="${MEZZO_TEST_THREADS:-2}" 2>&1 | tee "$log" || status=$?
# One closing line over every test binary (cargo's last line is a doc-test summary).
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "\nsummary: %d passed, %d failed, %d skipped\n", p, f, i }' "$log"
exit $status
