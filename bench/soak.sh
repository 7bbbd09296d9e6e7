#!/usr/bin/env bash
# Soak: llm-node under mixed load with worker kills and failing pulls for DURATION seconds,
# sampling supervisor and worker RSS, open fds and threads over time (flat is the goal).
#
#   bench/soak.sh                               # one hour (the target)
#   KILL_EVERY=30 PULL_EVERY=120 bench/soak.sh 600   # ten minutes
#
# Serves the bundled GGUF twice, as `a` and `b`, on 127.0.0.1 (a free port). CLIENTS clients send
# chat (plain, streaming, `tools` + `tool_choice: "required"`, `response_format` json_schema),
# completions (plain and streaming), embeddings, streams they hang up on, and bad requests (must be
# 4xx). Every KILL_EVERY s the worker of `a` is SIGKILLed (pid from GET /admin/models); every
# PULL_EVERY s an /api/pull goes to a registry at 127.0.0.1:9, where nothing listens, so it fails at
# once (nothing leaves the machine). Every SAMPLE s a row goes to $OUT_DIR/soak.csv.
#
# Exits non-zero when the node died, `b` saw any error, a request got an unexpected 5xx (a 503 or a
# stream error on `a` within KILL_GRACE s of a kill is expected), a model stayed out of `ready` for
# more than 30 s, or a worker outlived the node. The summary is printed and written to
# $OUT_DIR/summary.md; the node's log is $OUT_DIR/node.log. Everything it started is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-${DURATION:-3600}}"
CACHE="${LLM_NODE_CACHE:-$HOME/.cache/llm-node}"
KILL_EVERY="${KILL_EVERY:-60}"
PULL_EVERY="${PULL_EVERY:-300}"
SAMPLE="${SAMPLE:-10}"
CLIENTS="${CLIENTS:-4}"
CTX="${CTX:-512}"
PARALLEL="${PARALLEL:-2}"
THREADS="${THREADS:-1}"
MAX_TOKENS="${MAX_TOKENS:-24}"
KILL_GRACE="${KILL_GRACE:-10}"
OUT_DIR="${OUT_DIR:-bench/out/soak}"
MODEL="${MODEL:-$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
if [ -z "${LLM_NODE:-}" ]; then
  LLM_NODE="${CARGO_TARGET_DIR:-target}/release/llm-node"
  [ -x "$LLM_NODE" ] || LLM_NODE="$CACHE/target/release/llm-node"
fi
PY="${PYTHON:-python3}"
[ -x "$LLM_NODE" ] || { echo "no llm-node binary at $LLM_NODE (cargo build --release, or set LLM_NODE)" >&2; exit 2; }
[ -f "$MODEL" ] || { echo "no model at $MODEL (scripts/setup.sh fetches it, or set MODEL)" >&2; exit 2; }

child=
cleanup() {
  if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
    kill -TERM "$child" 2>/dev/null || true   # soak.py stops the node and its workers
    wait "$child" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$PY" bench/soak.py --node "$LLM_NODE" --model-path "$MODEL" --duration "$DURATION" \
  --kill-every "$KILL_EVERY" --pull-every "$PULL_EVERY" --sample "$SAMPLE" --clients "$CLIENTS" \
  --ctx "$CTX" --parallel "$PARALLEL" --threads "$THREADS" --max-tokens "$MAX_TOKENS" \
  --kill-grace "$KILL_GRACE" --out-dir "$OUT_DIR" -- ${LLM_NODE_EXTRA_ARGS:-} &
child=$!
set +e
wait "$child"
rc=$?
child=
exit "$rc"
