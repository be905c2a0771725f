#!/usr/bin/env bash
# Builds everything and runs the whole test suite (called by `make test`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins --tests
bash scripts/build-test-images.sh
export MEZZO_BIN_DIR="$PWD/target/debug"
cargo test --workspace -- --test-threads="${MEZZO_TEST_THREADS:-2}"
