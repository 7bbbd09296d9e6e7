#!/usr/bin/env bash
# One command: benchmark llm-node against llama.cpp's own llama-server on the
# same model, context, slots, threads and batch size, and write the report.
#
#   bench/run.sh                       full run (roughly 20-40 minutes on 2 cores)
#   QUICK=1 bench/run.sh               tiny smoke run (a minute or two once built)
#   SERVERS=llama-server bench/run.sh  only one server
#
# Steps: scripts/setup.sh (tools + bundled model), bench/build-llama-server.sh,
# `cargo build --release --bins`, then for each server: start it on a free
# loopback port, wait until it answers a completion, warm up, run
# bench/loadgen.py over CONCURRENCY x PROMPT_LENGTHS, RUNS times, while
# bench/rss.py samples the peak RSS of its process tree; stop it. Then
# llama-bench once as the raw-engine reference, and bench/report.py writes
# bench/out/{results.json,benchmarks.md,*.png}. Raw per-run JSON and server
# logs stay in bench/out/raw/.
#
# Settings (environment):
#   MODEL           GGUF to serve (default: the bundled model from setup.sh)
#   CTX             context per slot, tokens (llama-server gets -c CTX*PARALLEL)
#   PARALLEL        slots per server
#   THREADS         CPU threads (default: all cores)
#   BATCH           tokens per decode step (-b / --batch-size)
#   RUNS            repetitions of each point; the report shows medians
#   CONCURRENCY     space-separated client concurrencies
#   PROMPT_LENGTHS  space-separated prompt lengths, tokens
#   MAX_TOKENS      tokens generated per request (ignore_eos, so exact)
#   REQUESTS_PER_CLIENT  requests per concurrent client in one run (at least
#                   MIN_REQUESTS in total)
#   SERVERS         which servers, in order (default "llama-server llm-node")
#   LLAMA_SERVER_EXTRA_ARGS / LLM_NODE_EXTRA_ARGS  appended to each command
#   JOBS            parallel build jobs (default 2)
#   OUT_DIR         where results go (default bench/out)
#   QUICK=1         smoke run: small matrix, one run, short outputs
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

# The command as typed, with the settings that were overridden, for the report.
SETTINGS=(MODEL CTX PARALLEL THREADS BATCH RUNS CONCURRENCY PROMPT_LENGTHS MAX_TOKENS
  REQUESTS_PER_CLIENT MIN_REQUESTS SERVERS LLAMA_SERVER_EXTRA_ARGS LLM_NODE_EXTRA_ARGS QUICK
  LLAMA_CPP_PYTHON_VERSION SKIP_LLAMA_BENCH CARGO_TARGET_DIR LLM_NODE_CACHE)
COMMAND_LINE=""
for v in "${SETTINGS[@]}"; do
  if [ -n "${!v+x}" ]; then COMMAND_LINE+="$v=$(printf '%q' "${!v}") "; fi
done
COMMAND_LINE+="bench/run.sh"

CACHE="${LLM_NODE_CACHE:-$HOME/.cache/llm-node}"
QUICK="${QUICK:-0}"
if [ "$QUICK" = 1 ]; then
  : "${CTX:=512}" "${PARALLEL:=4}" "${RUNS:=1}" "${CONCURRENCY:=1 4}"
  : "${PROMPT_LENGTHS:=32 128}" "${MAX_TOKENS:=16}" "${REQUESTS_PER_CLIENT:=2}" "${MIN_REQUESTS:=4}"
fi
CTX="${CTX:-1024}"
PARALLEL="${PARALLEL:-16}"
THREADS="${THREADS:-$(nproc)}"
BATCH="${BATCH:-512}"
RUNS="${RUNS:-3}"
CONCURRENCY="${CONCURRENCY:-1 4 16}"
PROMPT_LENGTHS="${PROMPT_LENGTHS:-32 512}"
MAX_TOKENS="${MAX_TOKENS:-64}"
REQUESTS_PER_CLIENT="${REQUESTS_PER_CLIENT:-4}"
MIN_REQUESTS="${MIN_REQUESTS:-8}"
SERVERS="${SERVERS:-llama-server llm-node}"
JOBS="${JOBS:-2}"
OUT_DIR="${OUT_DIR:-$REPO/bench/out}"
READY_TIMEOUT="${READY_TIMEOUT:-300}"
export JOBS LLM_NODE_CACHE="$CACHE"

log() { echo "bench: $*" >&2; }
die() { log "$*"; exit 1; }

for L in $PROMPT_LENGTHS; do
  [ $((L + MAX_TOKENS)) -le "$CTX" ] || die "prompt $L + $MAX_TOKENS tokens does not fit CTX=$CTX"
done

# (a) tools and model
MODEL="${MODEL:-$(./scripts/setup.sh)}"
[ -f "$MODEL" ] || die "no model at $MODEL"
log "model: $MODEL"

# (b) llama-server (and llama-bench) from llama.cpp's own sources
LLAMA_SERVER=""
if [[ " $SERVERS " == *" llama-server "* ]] || [ "${SKIP_LLAMA_BENCH:-0}" != 1 ]; then
  LLAMA_SERVER="$(bench/build-llama-server.sh)"
  log "llama-server: $LLAMA_SERVER"
fi
LLAMA_BIN_DIR="$(dirname "${LLAMA_SERVER:-/nonexistent/x}")"

# (c) llm-node, release
LLM_NODE=""
if [[ " $SERVERS " == *" llm-node "* ]]; then
  log "building llm-node (cargo build --release --bins -j $JOBS, and the raw_decode example)"
  cargo build --release --bins -j "$JOBS"
  cargo build --release -p llm-node-worker --example raw_decode -j "$JOBS"
  target="${CARGO_TARGET_DIR:-target}"
  LLM_NODE="$(cd "$target/release" && pwd)/llm-node"
  [ -x "$LLM_NODE" ] || die "no llm-node binary at $LLM_NODE"
  log "llm-node: $LLM_NODE"
fi

# Python for the load generator and the plots, outside git.
VENV="$CACHE/bench-venv"
if ! "$VENV/bin/python" -c 'import aiohttp, matplotlib' 2>/dev/null; then
  log "creating $VENV (aiohttp, matplotlib)"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    'aiohttp>=3.9,<4' 'matplotlib>=3.7,<4'
fi
PY="$VENV/bin/python"

RAW="$OUT_DIR/raw"
rm -rf "$RAW"
mkdir -p "$RAW"

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

SERVER_PID=""
RSS_PID=""
stop_server() {
  if [ -n "$RSS_PID" ]; then
    kill -TERM "$RSS_PID" 2>/dev/null || true
    wait "$RSS_PID" 2>/dev/null || true
    RSS_PID=""
  fi
  if [ -n "$SERVER_PID" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    # Still there after 10 s: kill its process group (setsid made it a leader).
    kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
trap stop_server EXIT
trap 'exit 130' INT TERM

wait_ready() { # url log
  local url="$1" logf="$2" deadline=$((SECONDS + READY_TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 30 "$logf" >&2; die "server exited during start"; }
    code="$(curl -s -o /dev/null -w '%{http_code}' -m 10 -H 'content-type: application/json' \
      -d '{"model":"bench","prompt":"Hello","max_tokens":1,"temperature":0}' \
      "$url/v1/completions" || true)"
    [ "$code" = 200 ] && return 0
    sleep 0.5
  done
  tail -n 30 "$logf" >&2
  die "server not ready after ${READY_TIMEOUT}s"
}

run_server() { # name run
  local name="$1" r="$2" port url logf cmd
  port="$(free_port)"
  url="http://127.0.0.1:$port"
  logf="$RAW/$name.log"
  case "$name" in
    llama-server)
      # llama-server's -c is the total context, split evenly across -np slots.
      cmd=("$LLAMA_SERVER" -m "$MODEL" -c $((CTX * PARALLEL)) -np "$PARALLEL" -t "$THREADS"
        -b "$BATCH" --host 127.0.0.1 --port "$port")
      # shellcheck disable=SC2206
      cmd+=(${LLAMA_SERVER_EXTRA_ARGS:-}) ;;
    llm-node)
      cmd=("$LLM_NODE" --model "bench=$MODEL" --ctx-size "$CTX" --parallel "$PARALLEL"
        --threads "$THREADS" --batch-size "$BATCH" --host 127.0.0.1 --port "$port" --allow-ignore-eos)
      # shellcheck disable=SC2206
      cmd+=(${LLM_NODE_EXTRA_ARGS:-}) ;;
    *) die "unknown server $name" ;;
  esac
  printf '%q ' "${cmd[@]}" >"$RAW/$name.cmd"
  log "starting $name: ${cmd[*]}"
  setsid "${cmd[@]}" >>"$logf" 2>&1 &
  SERVER_PID=$!
  "$PY" bench/rss.py --pid "$SERVER_PID" --out "$RAW/$name.r$r.rss.json" &
  RSS_PID=$!
  wait_ready "$url" "$logf"
  log "$name ready on $url (pid $SERVER_PID)"

  local max_c=0 max_l=0
  for C in $CONCURRENCY; do if [ "$C" -gt "$max_c" ]; then max_c=$C; fi; done
  for L in $PROMPT_LENGTHS; do if [ "$L" -gt "$max_l" ]; then max_l=$L; fi; done
  log "$name: warm-up ($max_c clients, $max_l-token prompts)"
  "$PY" bench/loadgen.py --url "$url" --concurrency "$max_c" --requests "$max_c" \
    --prompt-tokens "$max_l" --max-tokens "$MAX_TOKENS" --seed 0 --out "$RAW/$name.warmup.json" \
    || { tail -n 30 "$logf" >&2; die "$name: warm-up failed"; }

  # One whole pass over the matrix. Every invocation gets its own seed, hence
  # prompts no earlier one sent; both servers get the same seeds.
  local seed=$(((r - 1) * 100))
  {
    for L in $PROMPT_LENGTHS; do
      for C in $CONCURRENCY; do
        local n=$((C * REQUESTS_PER_CLIENT))
        if [ "$n" -lt "$MIN_REQUESTS" ]; then n=$MIN_REQUESTS; fi
        local f="$RAW/$name.p$L.c$C.r$r.json"
        seed=$((seed + 1))
        # Exit status 2 = some requests failed: keep going, the report counts them.
        "$PY" bench/loadgen.py --url "$url" --concurrency "$C" --requests "$n" \
          --prompt-tokens "$L" --max-tokens "$MAX_TOKENS" --seed "$seed" --out "$f" \
          || [ $? = 2 ] || die "loadgen failed"
        kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 30 "$logf" >&2; die "$name died"; }
        "$PY" - "$f" "$name" <<'PY' >&2
import json, sys
d = json.load(open(sys.argv[1]))
c = d["config"]
n = lambda x: float("nan") if x is None else x  # every request failed: no figures
print(f"bench: {sys.argv[2]:12} prompt {c['prompt_tokens_calibrated']:>4} c {c['concurrency']:>2} "
      f"n {d['requests']:>3}: {n(d['gen_tok_s']):7.1f} tok/s, ttft p50 {n(d['ttft_ms']['p50']):7.1f} ms, "
      f"itl p99 {n(d['itl_ms']['p99']):6.1f} ms" + (f", {d['failed']} FAILED" if d["failed"] else ""))
PY
      done
    done
  }
  stop_server
  log "$name: peak RSS $("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["peak_rss_mib"])' \
    "$RAW/$name.r$r.rss.json") MiB"
}

# Runs alternate between the servers, and so does who goes first (A B, B A,
# A B, ...), so slow drift of the machine spreads over both alike. Each run
# starts its server afresh and warms it up.
for r in $(seq 1 "$RUNS"); do
  order="$SERVERS"
  if [ $((r % 2)) = 0 ]; then order="$(echo "$SERVERS" | tr ' ' '\n' | tac | tr '\n' ' ')"; fi
  for s in $order; do
    run_server "$s" "$r"
  done
done
# The peak over all runs, for the report.
for s in $SERVERS; do
  "$PY" - "$RAW" "$s" <<'PY'
import glob, json, sys
raw, name = sys.argv[1:]
runs = [json.load(open(f)) for f in sorted(glob.glob(f"{raw}/{name}.r*.rss.json"))]
json.dump(max(runs, key=lambda d: d["peak_rss_kib"]), open(f"{raw}/{name}.rss.json", "w"))
PY
done

# (f) llama-bench as the raw-engine reference, with no server running.
if [ "${SKIP_LLAMA_BENCH:-0}" != 1 ] && [ -x "$LLAMA_BIN_DIR/llama-bench" ]; then
  reps=5
  if [ "$QUICK" = 1 ]; then reps=1; fi
  log "llama-bench -p 512 -n $MAX_TOKENS -t $THREADS -r $reps"
  "$LLAMA_BIN_DIR/llama-bench" -m "$MODEL" -p 512 -n "$MAX_TOKENS" -t "$THREADS" -r "$reps" -o json \
    >"$RAW/llama-bench.json" 2>"$RAW/llama-bench.log" \
    || { log "llama-bench failed (see $RAW/llama-bench.log)"; rm -f "$RAW/llama-bench.json"; }
fi

# The raw engine of llm-node's own llama.cpp build: single-stream decode with
# no IPC and no HTTP (worker/examples/raw_decode.rs).
RAW_DECODE="${CARGO_TARGET_DIR:-target}/release/examples/raw_decode"
if [ -x "$RAW_DECODE" ]; then
  for L in $PROMPT_LENGTHS; do
    log "raw_decode prompt $L, $MAX_TOKENS tokens, $THREADS threads"
    "$RAW_DECODE" "$MODEL" "$L" "$MAX_TOKENS" "$THREADS" 5 >>"$RAW/raw-decode.jsonl" 2>"$RAW/raw-decode.log" \
      || log "raw_decode failed (see $RAW/raw-decode.log)"
  done
fi

# Context for the report (bench/meta.py reads these).
if [ -x "$LLAMA_BIN_DIR/llama-server" ]; then
  "$LLAMA_BIN_DIR/llama-server" --version >"$RAW/llama-server.version" 2>&1 || true
fi
if [ -n "$LLM_NODE" ]; then
  "$LLM_NODE" --version >"$RAW/llm-node.version" 2>&1 || true
fi
BENCH_COMMAND="$COMMAND_LINE" BENCH_MODEL="$MODEL" BENCH_SERVERS="$SERVERS" BENCH_QUICK="$QUICK" \
BENCH_CTX="$CTX" BENCH_PARALLEL="$PARALLEL" BENCH_THREADS="$THREADS" BENCH_BATCH="$BATCH" \
BENCH_RUNS="$RUNS" BENCH_CONCURRENCY="$CONCURRENCY" BENCH_PROMPT_LENGTHS="$PROMPT_LENGTHS" \
BENCH_MAX_TOKENS="$MAX_TOKENS" BENCH_REQUESTS_PER_CLIENT="$REQUESTS_PER_CLIENT" \
BENCH_MIN_REQUESTS="$MIN_REQUESTS" BENCH_LLAMA_BIN_DIR="$LLAMA_BIN_DIR" BENCH_RAW="$RAW" \
  "$PY" bench/meta.py >"$RAW/meta.json"

"$PY" bench/report.py --raw "$RAW" --out "$OUT_DIR"
log "report: $OUT_DIR/benchmarks.md"
