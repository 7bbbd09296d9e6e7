#!/usr/bin/env bash
# Like-for-like memory: llm-node's worker against llama-server, same model,
# same context per slot, same slots, same threads and batch, and the same
# cache layout (one KV cache per slot, no host-RAM prompt cache: llama-server
# `-no-kvu -cram 0`; its defaults, a unified KV cache plus an 8 GiB host prompt
# cache, are measured too for reference). Each server gets the same load
# (bench/loadgen.py, CLIENTS clients x PROMPT-token prompts, every slot used),
# then the kernel's own peak (VmHWM) of each process is read.
#
#   bench/memory.sh                  CTX=1024 PARALLEL=16 CLIENTS=16 PROMPT=512
#   CTX=4096 PARALLEL=4 bench/memory.sh
#
# Needs bench/run.sh's tools once (it builds llama-server and the venv).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${LLM_NODE_CACHE:-$HOME/.cache/llm-node}"
CTX="${CTX:-1024}"
PARALLEL="${PARALLEL:-16}"
THREADS="${THREADS:-$(nproc)}"
BATCH="${BATCH:-512}"
CLIENTS="${CLIENTS:-$PARALLEL}"
PROMPT="${PROMPT:-512}"
MAX_TOKENS="${MAX_TOKENS:-64}"
PY="$CACHE/bench-venv/bin/python"
[ -x "$PY" ] || PY=python3
LLAMA_SERVER="$(bench/build-llama-server.sh)"
LLM_NODE="${CARGO_TARGET_DIR:-target}/release/llm-node"
MODEL="$(./scripts/setup.sh)"

hwm() { awk '/VmHWM/ {print int($2/1024)}' "/proc/$1/status"; }
port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ready() { # url
  for _ in $(seq 600); do
    curl -sf "$1/v1/models" >/dev/null && return 0
    sleep 0.2
  done
  echo "server at $1 not ready" >&2
  return 1
}
load() { # url
  "$PY" bench/loadgen.py --url "$1" --concurrency "$CLIENTS" --requests "$CLIENTS" \
    --prompt-tokens "$PROMPT" --max-tokens "$MAX_TOKENS" --seed 1 --out /dev/null
}

measure_llama_server() { # label extra-args...
  local label="$1"; shift
  local p; p="$(port)"
  "$LLAMA_SERVER" -m "$MODEL" -c $((CTX * PARALLEL)) -np "$PARALLEL" -t "$THREADS" -b "$BATCH" \
    --host 127.0.0.1 --port "$p" "$@" >/tmp/llm-node-memory-ls.log 2>&1 &
  local pid=$!
  ready "http://127.0.0.1:$p"
  load "http://127.0.0.1:$p"
  printf '| llama-server %s | `%s` | %s |\n' "$label" "$*" "$(hwm $pid)"
  kill $pid; wait $pid 2>/dev/null || true
}

echo "CTX=$CTX per slot, PARALLEL=$PARALLEL, THREADS=$THREADS, BATCH=$BATCH, load: $CLIENTS clients x $PROMPT-token prompts, $MAX_TOKENS generated"
echo
echo "| process | flags | peak RSS (VmHWM, MiB) |"
echo "|---|---|---:|"
measure_llama_server "(per-slot KV, no host prompt cache)" -no-kvu -cram 0
measure_llama_server "(defaults)"

p="$(port)"
"$LLM_NODE" --model "bench=$MODEL" --ctx-size "$CTX" --parallel "$PARALLEL" --threads "$THREADS" \
  --batch-size "$BATCH" --host 127.0.0.1 --port "$p" --allow-ignore-eos >/tmp/llm-node-memory-node.log 2>&1 &
pid=$!
ready "http://127.0.0.1:$p"
load "http://127.0.0.1:$p"
worker="$(cat /proc/$pid/task/*/children | tr ' ' '\n' | grep . | head -1)"
printf '| llm-node worker | (defaults: per-slot KV, prompt cache in the slots, embeddings context made on first use) | %s |\n' "$(hwm "$worker")"
printf '| llm-node supervisor | | %s |\n' "$(hwm $pid)"
kill $pid; wait $pid 2>/dev/null || true
