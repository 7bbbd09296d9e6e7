#!/usr/bin/env bash
# The cost of grammar-constrained decoding: tokens/s of one stream with and
# without a JSON-schema grammar, with the worker's own sampler chain and
# context settings but no IPC and no HTTP (worker/examples/constrained_decode.rs).
#
# Modes: no grammar, {"type":"object"} (response_format json_object), and a
# nested schema; each greedy and at temperature 0.8. Runs alternate between
# the modes. Prints JSON lines (medians) and keeps them, with the generated
# texts, in $OUT_DIR.
#
# Usage: bench/constrained.sh [GEN_TOKENS=128] [THREADS=all cores] [RUNS=5]
#   MODEL       GGUF (default: the bundled model from scripts/setup.sh)
#   OUT_DIR     results (default bench/out): constrained.jsonl, constrained.log
#   JOBS        cargo build jobs (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
GEN="${1:-128}"
THREADS="${2:-$(nproc)}"
RUNS="${3:-5}"
MODEL="${MODEL:-$(./scripts/setup.sh)}"
OUT_DIR="${OUT_DIR:-bench/out}"
mkdir -p "$OUT_DIR"

cargo build --release -p llm-node-worker --example constrained_decode -j "${JOBS:-2}" >&2
BIN="${CARGO_TARGET_DIR:-target}/release/examples/constrained_decode"

echo "constrained: $GEN tokens, $THREADS threads, $RUNS runs, commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo '+dirty'), model $MODEL" >&2
"$BIN" "$MODEL" "$GEN" "$THREADS" "$RUNS" 2>"$OUT_DIR/constrained.log" | tee "$OUT_DIR/constrained.jsonl"
