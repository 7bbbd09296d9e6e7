#!/usr/bin/env bash
# Serving overhead per streamed token, llm-node against llama-server.
#
# Streams TOKENS tokens to each of CLIENTS clients (ignore_eos, greedy) from
#  - llm-node: the supervisor process's CPU (every thread; the worker is
#    another process and not counted): what the process boundary and the HTTP
#    layer cost;
#  - llama-server (same model, context, slots, threads): the CPU of its
#    threads other than llama.cpp's compute threads (bench/threads.py
#    --skip-compute): its HTTP layer's cost;
# and, while llm-node generates, bench/wake_floor.py: the kernel's cost of one
# wake-up plus one loopback TCP send on this machine under the same load.
# CPU time is read per thread from /proc/*/task/*/schedstat (ns).
#
# Usage: bench/supervisor_cpu.sh [TOKENS=2000] [CLIENTS=1]
#   SERVERS="llm-node" bench/supervisor_cpu.sh   (skip llama-server and the floor)
set -euo pipefail
cd "$(dirname "$0")/.."
TOKENS="${1:-2000}"
CLIENTS="${2:-1}"
SERVERS="${SERVERS:-llm-node llama-server floor}"
BIN="${CARGO_TARGET_DIR:-target}/release/llm-node"
MODEL="$(./scripts/setup.sh)"
PY="${LLM_NODE_CACHE:-$HOME/.cache/llm-node}/bench-venv/bin/python"
[ -x "$PY" ] || PY=python3
N=$((TOKENS * CLIENTS))
body="{\"model\":\"bench\",\"prompt\":\"Once upon a time\",\"max_tokens\":$TOKENS,\"ignore_eos\":true,\"stream\":true,\"temperature\":0}"
PID=""
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; wait 2>/dev/null' EXIT

wait_up() { for _ in $(seq 600); do curl -sf "localhost:$1/v1/models" >/dev/null && return; sleep 0.2; done; exit 1; }
stream_all() { # port
  for _ in $(seq "$CLIENTS"); do
    curl -sN "localhost:$1/v1/completions" -H 'content-type: application/json' -d "$body" >/dev/null &
  done
  wait $(jobs -p | grep -v "^$PID$") 2>/dev/null || true
}

for server in $SERVERS; do
  PORT=$((20000 + RANDOM % 20000))
  case "$server" in
    llm-node)
      "$BIN" --host 127.0.0.1 --port "$PORT" --model bench="$MODEL" --ctx-size 4096 \
        --parallel "$CLIENTS" --no-embeddings --liveness-interval-ms 0 --allow-ignore-eos >/dev/null 2>&1 &
      PID=$!; wait_up "$PORT"
      read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$PID/stat")
      "$PY" bench/threads.py snap "$PID" >/tmp/llm-node-cpu.before
      start=$(date +%s.%N); stream_all "$PORT"; end=$(date +%s.%N)
      "$PY" bench/threads.py snap "$PID" >/tmp/llm-node-cpu.after
      read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$PID/stat")
      hz=$(getconf CLK_TCK)
      echo "llm-node supervisor: $("$PY" bench/threads.py diff /tmp/llm-node-cpu.before /tmp/llm-node-cpu.after $N)"
      "$PY" -c "import sys; u,s,hz,n,a,b=map(float,sys.argv[1:]); print(f'  ({(u)/hz/n*1e6:.0f} user / {s/hz/n*1e6:.0f} system us per token from /proc/PID/stat ticks; {n:.0f} tokens in {b-a:.1f} s, {n/(b-a):.0f} tok/s)')" \
        $((u1 - u0)) $((s1 - s0)) "$hz" "$N" "$start" "$end"
      kill $PID; wait $PID 2>/dev/null || true; PID="" ;;
    llama-server)
      LS="$(bench/build-llama-server.sh)"
      "$LS" -m "$MODEL" -c $((4096 * CLIENTS)) -np "$CLIENTS" -t "$(nproc)" --host 127.0.0.1 \
        --port "$PORT" >/dev/null 2>&1 &
      PID=$!; wait_up "$PORT"
      "$PY" bench/threads.py snap "$PID" >/tmp/llm-node-cpu.before
      start=$(date +%s.%N); stream_all "$PORT"; end=$(date +%s.%N)
      "$PY" bench/threads.py snap "$PID" >/tmp/llm-node-cpu.after
      echo "llama-server HTTP threads: $("$PY" bench/threads.py diff /tmp/llm-node-cpu.before /tmp/llm-node-cpu.after $N --skip-compute)"
      echo "  ($N tokens in $("$PY" -c "import sys; print(f'{float(sys.argv[2])-float(sys.argv[1]):.1f}')" "$start" "$end") s)"
      kill $PID; wait $PID 2>/dev/null || true; PID="" ;;
    floor)
      "$BIN" --host 127.0.0.1 --port "$PORT" --model bench="$MODEL" --ctx-size 4096 \
        --parallel 1 --no-embeddings --liveness-interval-ms 0 --allow-ignore-eos >/dev/null 2>&1 &
      PID=$!; wait_up "$PORT"
      curl -sN "localhost:$PORT/v1/completions" -H 'content-type: application/json' -d "$body" >/dev/null &
      sleep 1
      echo "while llm-node generates, $(python3 bench/wake_floor.py 1000 0.007)"
      kill $PID; wait 2>/dev/null || true; PID="" ;;
  esac
done
