#!/usr/bin/env bash
# The one command that sets up and runs the whole test suite (CI runs it through .ci/run):
# installs test dependencies, checks formatting and lints, builds the release binary once, and
# runs unit and end-to-end tests against it.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { printf '\n=== [%4ss] %s\n' "$(( $(date +%s) - start ))" "$*" >&2; }

step "installing test dependencies"
scripts/setup-test-deps.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --release --locked -- -D warnings

step "building the release binary and tests"
cargo build --release --locked -p sediment-cli
cargo nextest run --release --locked --workspace --no-run

step "running the tests"
export SEDIMENT_PYTHON="$PWD/.venv/bin/python"
export SEDIMENT_BIN="$PWD/target/release/sediment"
cargo nextest run --release --locked --workspace --no-fail-fast

step "done"
