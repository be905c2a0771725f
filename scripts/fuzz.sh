#!/usr/bin/env bash
# Fuzzes every decoder of outside input (the cargo-fuzz targets in fuzz/) for a
# bounded time each, and prints a table: target, seconds, executions, coverage
# (libFuzzer's cov/ft), corpus size, result.
#
# Usage: scripts/fuzz.sh [target...]            (default: every target)
#   FUZZ_SECONDS=60    seconds per target (600 for a real session)
#   FUZZ_PARALLEL=1    targets fuzzed at once (each is one process)
#   FUZZ_NICE=19       niceness of the fuzzers, so builds and tests go first
#
# Corpora live in fuzz/corpus/<target> (committed; new inputs that reach new
# code are added there, minimize with `cargo fuzz cmin` before committing);
# crashes go to fuzz/artifacts/<target>/ (not committed: turn each into a unit
# test in the crate it crashed). Logs: fuzz/target/logs/<target>.log.
#
# Why RUSTC_BOOTSTRAP=1: cargo-fuzz compiles with flags that only nightly rustc
# accepts (-Zsanitizer, -Cpasses=sancov-module, -Cllvm-args=-sanitizer-coverage-*),
# and this project builds with the stable toolchain only. RUSTC_BOOTSTRAP=1 lets
# stable rustc accept them; it is set for the fuzz builds alone, never for the
# binaries we ship or test.
#
# Build flags: -O (release), -a (debug assertions and integer overflow checks,
# so an overflow is a crash, as in `make test`), --sanitizer=none (the decoders
# are safe Rust; without ASan a run does several times more executions).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
seconds=${FUZZ_SECONDS:-60}
parallel=${FUZZ_PARALLEL:-1}
niceness=${FUZZ_NICE:-19}

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
build_flags=(-O -a --sanitizer=none)
cd "$here/fuzz"

if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi
# One build of every target first, so runs in parallel do not race to build.
nice -n "$niceness" cargo fuzz build "${build_flags[@]}"
mkdir -p target/logs

run_one() {
  local t=$1
  mkdir -p "corpus/$t" "artifacts/$t"
  # -timeout: one input taking over 10 s is a hang; -rss_limit_mb: a leak or a
  # bomb is a crash. The layer_tar target unpacks into /tmp/mezzo-fuzz-layer,
  # a fixed path (its seeds aim symlinks at it), so one process per target.
  nice -n "$niceness" cargo fuzz run "${build_flags[@]}" "$t" "corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/" >"target/logs/$t.log" 2>&1
}

status=0
declare -A pids=()
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n || true; done
  echo "fuzz: $t for ${seconds}s" >&2
  run_one "$t" &
  pids[$t]=$!
done
declare -A results=()
for t in "${targets[@]}"; do
  if wait "${pids[$t]}"; then results[$t]=ok; else results[$t]=CRASH; status=1; fi
done

printf '%-18s %8s %12s %8s %8s %7s  %s\n' target seconds execs cov ft corpus result
for t in "${targets[@]}"; do
  log=target/logs/$t.log
  execs=$(grep -oP 'stat::number_of_executed_units: \K[0-9]+' "$log" | tail -1 || true)
  secs=$(grep -oP 'Done [0-9]+ runs in \K[0-9]+' "$log" | tail -1 || true)
  cov=$(grep -oP ' cov: \K[0-9]+' "$log" | tail -1 || true)
  ft=$(grep -oP ' ft: \K[0-9]+' "$log" | tail -1 || true)
  printf '%-18s %8s %12s %8s %8s %7s  %s\n' "$t" "${secs:--}" "${execs:--}" "${cov:--}" "${ft:--}" \
    "$(find "corpus/$t" -type f | wc -l)" "${results[$t]}"
  if [ "${results[$t]}" != ok ]; then
    grep -m1 -A3 -E "panicked at|ERROR: libFuzzer" "$log" | sed 's/^/    /' || true
    ls "artifacts/$t" | sed "s|^|    artifact: fuzz/artifacts/$t/|"
  fi
done
exit $status
