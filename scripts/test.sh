#!/usr/bin/env bash
# One command: set up this machine (build tools, bundled model) and run the
# whole test suite, real-model tests included, in the release profile (one
# llama.cpp build serves both the run and the test command).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null
cargo build --release --workspace --bins --examples
cargo test --release --workspace "$@"
