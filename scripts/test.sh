#!/usr/bin/env bash
# One command: set up this machine (build tools, bundled model, llama.cpp's
# template corpus, the Python test clients, prometheus/promtool) and run the
# whole test suite, real-model tests included, in the release profile (one
# llama.cpp build serves both the run and the test command).
set -euo pipefail
cd "$(dirname "$0")/.."
model="$(./scripts/setup.sh)"
# Where setup.sh put the test material, for every test that reads it.
CACHE="${LLM_NODE_CACHE:-$HOME/.cache/llm-node}"
export LLM_NODE_CACHE="$CACHE"
export LLM_NODE_TEST_MODEL="${LLM_NODE_TEST_MODEL:-$model}"
export LLM_NODE_LLAMA_CPP_SRC="${LLM_NODE_LLAMA_CPP_SRC:-$CACHE/llama-cpp-src}"
export LLM_NODE_PROMETHEUS_DIR="${LLM_NODE_PROMETHEUS_DIR:-$CACHE/prometheus/bin}"
cargo build --release --workspace --bins --examples
cargo test --release --workspace "$@"
