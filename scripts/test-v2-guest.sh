#!/usr/bin/env bash
# Runs the tests that need a real cgroups v2 kernel in scripts/v2-guest.sh's
# QEMU guest (called by scripts/test.sh after the host tests; runnable alone
# after `cargo build --workspace --bins --tests` and
# scripts/build-test-images.sh):
# the rust containerizer's cgroup, OOM, limit, destroy and recovery tests,
# from the test binaries already built. Docker is not in the guest, so no
# docker test runs there.
#
#   scripts/test-v2-guest.sh [NOT_RUN_FILE]
#
# Skips recorded in the guest (mezzo-testkit) land in $MEZZO_SKIP_DIR. When
# the guest cannot run (no qemu, no kernel, MEZZO_V2_GUEST=off) every
# selected test is appended to NOT_RUN_FILE as "name<TAB>reason" (a skip,
# counted by scripts/test.sh's summary) and the script exits 0; it exits
# non-zero when a test failed in the guest.
set -euo pipefail
cd "$(dirname "$0")/.."
not_run=${1:-/dev/null}
export MEZZO_BIN_DIR=${MEZZO_BIN_DIR:-$PWD/target/debug}

# The end-to-end tests (tests/e2e rust_, tests/limitations, tests/recovery)
# read v2 paths too, but their agent does not register within the tests' 30 s
# in the emulated guest yet, so they are not selected.
suites=(  # crate directory/test target, libtest filters
  "containerizer/cgroups_real"
  "containerizer/lifecycle"
  "containerizer/rust_containers"
)
# The executables of the workspace's test targets, as `cargo test
# --workspace` built them (one package alone could build other features).
executables=$(cargo test --workspace --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in m["target"]["kind"]:
        crate_dir = m["manifest_path"].split("/")[-2]
        print(crate_dir + "/" + m["target"]["name"], m["executable"])
') || { echo "v2 guest: cargo test --workspace --no-run failed"; exit 1; }
command="rc=0"
selected=()
for suite in "${suites[@]}"; do
  read -r target filters <<<"$suite"
  bin=$(awk -v t="$target" '$1 == t { print $2; exit }' <<<"$executables")
  [ -n "$bin" ] || { echo "v2 guest: no test binary $target"; exit 1; }
  selected+=("$bin $filters")
  command+="; echo '== v2 guest: $target'; $bin --test-threads=2 --skip docker $filters || rc=1"
done
command+='; exit $rc'

not_running() {  # every selected test, as skipped with the reason
  echo "v2 guest: not run: $1"
  for s in "${selected[@]}"; do
    read -r bin filters <<<"$s"
    name=$(basename "$bin" | sed 's/-[0-9a-f]*$//')
    "$bin" --list --format terse --skip docker $filters 2>/dev/null | sed -n 's/: test$//p' |
      while read -r t; do printf 'v2-guest:%s::%s\t%s\n' "$name" "$t" "$1"; done >> "$not_run"
  done
  exit 0
}
[ "${MEZZO_V2_GUEST:-on}" != off ] || not_running "MEZZO_V2_GUEST=off"
command -v qemu-system-x86_64 >/dev/null || not_running "qemu-system-x86_64 is not installed"

# The guest sees the workspace at the same path: its skips come back through it.
skips="$PWD/target/v2-guest/skips.$$"
rm -rf "$skips"
mkdir -p "$skips"
trap 'rm -rf "$skips"' EXIT
started=$(date +%s)
rc=0
# nice: the emulated CPUs must not starve the rest of the machine.
nice bash scripts/v2-guest.sh --env "MEZZO_BIN_DIR=$MEZZO_BIN_DIR" --env "MEZZO_SKIP_DIR=$skips" \
  -- bash -c "$command" || rc=$?
if [ -n "${MEZZO_SKIP_DIR:-}" ]; then
  mkdir -p "$MEZZO_SKIP_DIR"
  cp "$skips"/* "$MEZZO_SKIP_DIR"/ 2>/dev/null || true
fi
echo "v2 guest: exit $rc after $(($(date +%s) - started)) s"
[ "$rc" != 125 ] || not_running "the QEMU guest did not run the tests (scripts/v2-guest.sh exit 125, reason above)"
exit "$rc"
