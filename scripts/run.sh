#!/usr/bin/env bash
# One command: set up this machine, build llm-node (release), and serve the
# bundled model on http://0.0.0.0:11435 (override with --port, --host, ...).
# Extra arguments go to `llm-node`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null
cargo build --release --bins
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/llm-node" "$@"
