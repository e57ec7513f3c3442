#!/usr/bin/env bash
# Fuzzes the parsers that read users' and the network's input (datafiles, templates, the SQL
# planner, NDJSON and CSV decoding): each target runs seeded random mutations of real inputs for
# FUZZ_SECONDS (default 600, ten minutes), two targets at a time. A failing input is saved under
# $CARGO_TARGET_DIR/tmp/fuzz-failures/ and named in the output.
#
#   ./scripts/fuzz.sh                 # ten minutes per target
#   FUZZ_SECONDS=60 FUZZ_SEED=7 ./scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/petrel/target}"
export FUZZ_SECONDS="${FUZZ_SECONDS:-600}"
cargo test --release --test fuzz -- --nocapture --test-threads 2
