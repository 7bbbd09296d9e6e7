#!/usr/bin/env bash
# Decode speed of the portable release build against the native build, on
# this machine: the same model, one stream at a time (the decode-bound case),
# alternating native and portable ROUNDS times so that load from other
# processes hits both alike; a fresh node per round. Prints one line per
# round and the medians (tokens/s = 1000 / median inter-token ms).
#
#   bench/portable.sh NATIVE_BIN_DIR PORTABLE_BIN_DIR
#   e.g. bench/portable.sh ~/.cache/llm-node/target/release dist/llm-node-0.1.0-linux-x86_64-portable/bin
#
# Settings: ROUNDS (3), REQUESTS per round (6), MAX_TOKENS (128), THREADS (all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
native="$1" portable="$2"
CACHE="${LLM_NODE_CACHE:-$HOME/.cache/llm-node}"
model="${MODEL:-$(./scripts/setup.sh)}"
ROUNDS="${ROUNDS:-3}" REQUESTS="${REQUESTS:-6}" MAX_TOKENS="${MAX_TOKENS:-128}" THREADS="${THREADS:-$(nproc)}"
VENV="$CACHE/bench-venv"
"$VENV/bin/python" -c 'import aiohttp' 2>/dev/null || { python3 -m venv "$VENV"; "$VENV/bin/pip" install -q 'aiohttp>=3.9,<4'; }
out="$(mktemp -d)"

run_one() { # FLAVOR BIN_DIR ROUND
  local port log pid
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  log="$out/$1-$3.log"
  LLM_NODE_LOOPBACK_ONLY=true LLM_NODE_ALLOW_IGNORE_EOS=true "$2/llm-node" --host 127.0.0.1 --port "$port" \
    --model "bench=$model" --ctx-size 1024 --parallel 1 --threads "$THREADS" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 240); do curl -fs "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1 && break; sleep 0.5; done
  "$VENV/bin/python" bench/loadgen.py --url "http://127.0.0.1:$port" --model bench -c 1 -n "$REQUESTS" \
    --warmup 1 --prompt-tokens 32 --max-tokens "$MAX_TOKENS" --seed "$3" --out "$out/$1-$3.json"
  kill -TERM "$pid"; wait "$pid" || true
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], sys.argv[3], "itl_p50_ms=%.3f" % r["itl_ms"]["p50"], "tok_s=%.1f" % (1000/r["itl_ms"]["p50"]))' \
    "$out/$1-$3.json" "$1" "$3"
}

for r in $(seq 1 "$ROUNDS"); do
  run_one native "$native" "$r"
  run_one portable "$portable" "$r"
done | tee "$out/rounds.txt"
python3 - "$out/rounds.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {}
for flavor in ("native", "portable"):
    med[flavor] = statistics.median(float(r[3].split("=")[1]) for r in rows if r[0] == flavor)
    print(f"median {flavor}: {med[flavor]:.1f} tok/s")
print(f"portable / native: {med['portable'] / med['native'] * 100:.1f} %")
PY
grep -h 'loading ggml backend modules\|system_info\|CPU :' "$out"/portable-1.log | head -3 || true
