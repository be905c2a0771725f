#!/usr/bin/env bash
# Builds everything and runs the whole test suite (called by `make test`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins --tests
bash scripts/build-test-images.sh
export MEZZO_BIN_DIR="$PWD/target/debug"
log=$(mktemp)
# Tests that cannot run here record a marker (mezzo-testkit's `skip`).
MEZZO_SKIP_DIR=$(mktemp -d)
export MEZZO_SKIP_DIR
trap 'rm -rf "$log" "$MEZZO_SKIP_DIR"' EXIT
status=0
cargo test --workspace --no-fail-fast -- --test-threads="${MEZZO_TEST_THREADS:-2}" 2>&1 | tee "$log" || status=$?

# Cgroups v2 on a real kernel, in a QEMU guest (this host may well be v1):
# scripts/test-v2-guest.sh.
# Tests the guest could not run are listed in $not_run: skipped, in no count.
not_run=$(mktemp)
trap 'rm -rf "$log" "$MEZZO_SKIP_DIR" "$not_run"' EXIT
bash scripts/test-v2-guest.sh "$not_run" 2>&1 | tee -a "$log" || status=1
# One closing line over every test binary (cargo's last line is a doc-test summary).
# A skipped test returned early, so libtest counted it as passed: move it to skipped.
skipped=$(cat "$MEZZO_SKIP_DIR"/* 2>/dev/null | wc -l)
never=$(wc -l < "$not_run")
if [ $((skipped + never)) -gt 0 ]; then
  echo; echo "skipped tests:"; cat "$MEZZO_SKIP_DIR"/* "$not_run" 2>/dev/null | sort | sed 's/\t/: /; s/^/  /'
fi
# Tests that never started (in $not_run) are in no libtest count: only skipped.
awk -v s="$skipped" -v n="$never" '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "\nsummary: %d passed, %d failed, %d skipped\n", p - s, f, i + s + n }' "$log"
exit $status
