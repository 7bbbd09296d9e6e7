#!/usr/bin/env bash
# Supervisor CPU per streamed token: starts llm-node on the bundled model,
# streams N tokens (one request, ignore_eos), and divides the supervisor
# process's own CPU time (utime+stime from /proc, workers excluded) by the
# tokens streamed. Usage: bench/supervisor_cpu.sh [TOKENS=2000] [CLIENTS=1]
set -euo pipefail
cd "$(dirname "$0")/.."
TOKENS="${1:-2000}"
CLIENTS="${2:-1}"
BIN="${CARGO_TARGET_DIR:-target}/release/llm-node"
MODEL="$(./scripts/setup.sh)"
PORT=$((20000 + RANDOM % 20000))
"$BIN" --host 127.0.0.1 --port "$PORT" --model bench="$MODEL" --ctx-size 4096 --parallel "$CLIENTS" \
  --no-embeddings --liveness-interval-ms 0 >/dev/null 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null' EXIT
for _ in $(seq 100); do curl -sf "localhost:$PORT/health/ready" >/dev/null && break; sleep 0.1; done
ticks() { awk '{print $14 + $15, $14, $15}' "/proc/$PID/stat"; }
HZ=$(getconf CLK_TCK)
body="{\"model\":\"bench\",\"prompt\":\"Once upon a time\",\"max_tokens\":$TOKENS,\"ignore_eos\":true,\"stream\":true,\"temperature\":0}"
read -r before ubefore sbefore <<<"$(ticks)"
start=$(date +%s.%N)
for _ in $(seq "$CLIENTS"); do
  curl -sN "localhost:$PORT/v1/completions" -H 'content-type: application/json' -d "$body" >/dev/null &
done
wait $(jobs -p | grep -v "^$PID$") 2>/dev/null || true
end=$(date +%s.%N)
read -r after uafter safter <<<"$(ticks)"
python3 - "$before" "$after" "$HZ" "$TOKENS" "$CLIENTS" "$start" "$end" "$ubefore" "$uafter" <<'PY'
import sys
b, a, hz, tokens, clients, s, e, ub, ua = map(float, sys.argv[1:])
cpu = (a - b) / hz
user = (ua - ub) / hz
n = tokens * clients
print(f"supervisor CPU {cpu*1000:.0f} ms for {n:.0f} streamed tokens = {cpu/n*1e6:.1f} us/token "
      f"({user/n*1e6:.1f} user, {(cpu-user)/n*1e6:.1f} system; "
      f"wall {e-s:.1f} s, {n/(e-s):.0f} tok/s)")
PY
