#!/usr/bin/env bash
# The agentic benchmark: llm-node against llama-server on many multi-turn
# conversations over one long shared prefix (system prompt + tool
# definitions), and on code edits whose answers repeat their prompt.
# bench/agentic/agentic.py is the load; this script builds, starts each
# server afresh for each run (never two at once), runs both workloads on it,
# stops it, alternates the servers from run to run, and prints a table.
#
#   bench/agentic/run.sh                 full size (a quiet machine: 30+ minutes)
#   QUICK=1 bench/agentic/run.sh         small size (a few minutes)
#
# Settings (environment; QUICK=1 defaults in brackets):
#   MODEL          GGUF served by both (default: the bundled model)
#   PARALLEL       slots [2] (default 4)
#   CTX            context per slot, tokens [3072] (default 4096)
#   THREADS        CPU threads (default: all cores)
#   BATCH          batch size (default 512)
#   CONVERSATIONS  agentic conversations [4 x PARALLEL] (default 4 x PARALLEL)
#   TURNS          turns per conversation [2] (default 3)
#   PREFIX_TOKENS  shared prefix length [1500] (default 1500)
#   STAGGER        seconds between conversation starts [0.5] (default 1)
#   EDITS          edit requests [4] (default 16); EDIT_TOKENS answer length [128] (default 384)
#   RUNS           passes over the servers [1] (default 3)
#   SERVERS        configurations, in order: any of
#                    llama-server        its defaults (host-RAM prompt cache on, 8 GiB)
#                    llama-server-ngram  plus NGRAM_ARGS
#                    llm-node            its defaults (host-RAM prompt cache on, 4 GiB;
#                                        prefill ahead on)
#                    llm-node-noahead    --prefill-ahead false
#                    llm-node-spec       plus --spec-ngram SPEC_NGRAM
#                    llm-node-base       --cache-ram 0: the engine before issue #17
#                  (default: all six)
#   SPEC_NGRAM     n-gram size for llm-node-spec (default 3)
#   NGRAM_ARGS     llama-server's speculation flags for llama-server-ngram
#                  (default "--spec-type ngram-simple")
#   LLM_NODE_EXTRA_ARGS / LLAMA_SERVER_EXTRA_ARGS  appended to every such server
#   OUT_DIR        results (default bench/out/agentic)
#   SKIP_BUILD=1   use the llm-node binaries already built
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO="$PWD"
CACHE="${LLM_NODE_CACHE:-$HOME/.cache/llm-node}"
export LLM_NODE_CACHE="$CACHE"

if [ "${QUICK:-0}" = 1 ]; then
  : "${PARALLEL:=2}" "${CTX:=3072}" "${TURNS:=2}" "${STAGGER:=0.5}" "${EDITS:=4}"
  : "${EDIT_TOKENS:=128}" "${RUNS:=1}"
fi
PARALLEL="${PARALLEL:-4}"
CTX="${CTX:-4096}"
THREADS="${THREADS:-$(nproc)}"
BATCH="${BATCH:-512}"
CONVERSATIONS="${CONVERSATIONS:-$((4 * PARALLEL))}"
TURNS="${TURNS:-3}"
PREFIX_TOKENS="${PREFIX_TOKENS:-1500}"
STAGGER="${STAGGER:-1}"
EDITS="${EDITS:-16}"
EDIT_TOKENS="${EDIT_TOKENS:-384}"
RUNS="${RUNS:-3}"
SERVERS="${SERVERS:-llama-server llama-server-ngram llm-node llm-node-spec llm-node-noahead llm-node-base}"
SPEC_NGRAM="${SPEC_NGRAM:-3}"
NGRAM_ARGS="${NGRAM_ARGS:---spec-type ngram-simple}"
OUT_DIR="${OUT_DIR:-$REPO/bench/out/agentic}"
READY_TIMEOUT="${READY_TIMEOUT:-300}"

log() { echo "agentic: $*" >&2; }
die() { log "$*"; exit 1; }

MODEL="${MODEL:-$(./scripts/setup.sh)}"
[ -f "$MODEL" ] || die "no model at $MODEL"
if [[ "$SERVERS" == *llama-server* ]]; then
  LLAMA_SERVER="$(bench/build-llama-server.sh)"
fi
# llm-node is built whatever SERVERS says: it counts the shared prefix.
# SKIP_BUILD=1 uses the binaries already in the target dir.
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -p llm-node -p llm-node-worker --bins -j "${JOBS:-2}"
fi
LLM_NODE="$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)/llm-node"
VENV="$CACHE/bench-venv"
if ! "$VENV/bin/python" -c 'import aiohttp' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check 'aiohttp>=3.9,<4' 'matplotlib>=3.7,<4'
fi
PY="$VENV/bin/python"
RAW="$OUT_DIR/raw"
rm -rf "$RAW"
mkdir -p "$RAW"

SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
trap stop_server EXIT
trap 'exit 130' INT TERM

# start_server NAME LOG -> sets URL
start_server() {
  local name="$1" logf="$2" port cmd
  port="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  URL="http://127.0.0.1:$port"
  case "$name" in
    llama-server | llama-server-ngram)
      cmd=("$LLAMA_SERVER" -m "$MODEL" -c $((CTX * PARALLEL)) -np "$PARALLEL" -t "$THREADS"
        -b "$BATCH" --host 127.0.0.1 --port "$port")
      # shellcheck disable=SC2206
      cmd+=(${LLAMA_SERVER_EXTRA_ARGS:-})
      # shellcheck disable=SC2206
      if [ "$name" = llama-server-ngram ]; then cmd+=($NGRAM_ARGS); fi ;;
    llm-node | llm-node-spec | llm-node-base | llm-node-noahead)
      cmd=("$LLM_NODE" --model "bench=$MODEL" --ctx-size "$CTX" --parallel "$PARALLEL"
        --threads "$THREADS" --batch-size "$BATCH" --host 127.0.0.1 --port "$port"
        --allow-ignore-eos --no-embeddings)
      if [ "$name" = llm-node-base ]; then cmd+=(--cache-ram 0); fi
      if [ "$name" = llm-node-noahead ]; then cmd+=(--prefill-ahead false); fi
      if [ "$name" = llm-node-spec ]; then cmd+=(--spec-ngram "$SPEC_NGRAM"); fi
      # shellcheck disable=SC2206
      cmd+=(${LLM_NODE_EXTRA_ARGS:-}) ;;
    *) die "unknown server $name" ;;
  esac
  printf '%q ' "${cmd[@]}" >"$RAW/$name.cmd"
  log "starting $name: ${cmd[*]}"
  setsid "${cmd[@]}" >>"$logf" 2>&1 &
  SERVER_PID=$!
  local deadline=$((SECONDS + READY_TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 30 "$logf" >&2; die "$name exited during start"; }
    code="$(curl -s -o /dev/null -w '%{http_code}' -m 10 -H 'content-type: application/json' \
      -d '{"model":"bench","prompt":"Hello","max_tokens":1,"temperature":0}' "$URL/v1/completions" || true)"
    [ "$code" = 200 ] && return 0
    sleep 0.5
  done
  tail -n 30 "$logf" >&2
  die "$name not ready after ${READY_TIMEOUT}s"
}

# scrape NAME FILE: llm-node's /metrics after a workload (its worker's
# counters arrive with the next heartbeat, hence the pause), for
# bench/agentic/steps.py: draft acceptance, tokens per decode step, queue
# wait as a share of TTFT. Cumulative since the server started.
scrape() {
  case "$1" in
    llm-node*) sleep "${SCRAPE_PAUSE:-6}"; curl -s -m 10 "$URL/metrics" >"$2" || true ;;
  esac
}

# The shared prefix, counted by the model's tokenizer (through llm-node), on a
# server that is then stopped: no measured server has seen it.
start_server llm-node "$RAW/calibrate.log"
"$PY" bench/agentic/agentic.py --url "$URL" --calibrate --prefix-tokens "$PREFIX_TOKENS" --out "$RAW/prefix.json"
stop_server
log "shared prefix: $("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["prefix_tokens"])' "$RAW/prefix.json") tokens"

for r in $(seq 1 "$RUNS"); do
  order="$SERVERS"
  if [ $((r % 2)) = 0 ]; then order="$(echo "$SERVERS" | tr ' ' '\n' | tac | tr '\n' ' ')"; fi
  for s in $order; do
    start_server "$s" "$RAW/$s.log"
    "$PY" bench/agentic/agentic.py --url "$URL" --workload agentic --prefix-file "$RAW/prefix.json" \
      --conversations "$CONVERSATIONS" --turns "$TURNS" --stagger "$STAGGER" --max-tokens 64 \
      --out "$RAW/$s.agentic.r$r.json" || [ $? = 2 ] || die "agentic load failed"
    scrape "$s" "$RAW/$s.agentic.r$r.metrics"
    "$PY" bench/agentic/agentic.py --url "$URL" --workload edit --edits "$EDITS" \
      --concurrency "$PARALLEL" --max-tokens "$EDIT_TOKENS" \
      --out "$RAW/$s.edit.r$r.json" || [ $? = 2 ] || die "edit load failed"
    scrape "$s" "$RAW/$s.edit.r$r.metrics"
    stop_server
  done
done

"$PY" - "$RAW" "$SERVERS" "$RUNS" <<'PY' | tee "$OUT_DIR/table.md"
import json, statistics, sys
raw, servers, runs = sys.argv[1], sys.argv[2].split(), int(sys.argv[3])
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")
for w in ("agentic", "edit"):
    print(f"\n{w} workload (median of {runs} run(s))\n")
    print("| server | TTFT p50 ms | TTFT p99 ms | latency p50 ms | latency p99 ms | ITL p50 ms | ITL p99 ms | gen tok/s | prompt tokens | evaluated | failed |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in servers:
        d = [json.load(open(f"{raw}/{s}.{w}.r{r}.json")) for r in range(1, runs + 1)]
        lat = [x.get("latency_ms") or {} for x in d]
        print(f"| {s} | {med(x['ttft_ms']['p50'] for x in d):.0f} | {med(x['ttft_ms']['p99'] for x in d):.0f} "
              f"| {med(x.get('p50') for x in lat):.0f} | {med(x.get('p99') for x in lat):.0f} "
              f"| {med(x['itl_ms']['p50'] for x in d):.1f} | {med(x['itl_ms']['p99'] for x in d):.1f} "
              f"| {med(x['gen_tok_s'] for x in d):.1f} | {med(x['prompt_tokens'] for x in d):.0f} "
              f"| {med(x['prompt_tokens_evaluated'] for x in d):.0f} | {sum(x['failed'] for x in d)} |")
PY

# The plot of the table's medians, with each run's spread.
"$PY" bench/agentic/plot.py "$RAW" "$SERVERS" "$RUNS" "$OUT_DIR/agentic.png" \
  || log "no plot (matplotlib missing?)"

# Load-independent figures of the llm-node configurations (see steps.py).
if compgen -G "$RAW/*.metrics" >/dev/null; then
  echo
  echo "llm-node's own counts (bench/agentic/steps.py)"
  echo
  "$PY" bench/agentic/steps.py "$RAW"
fi | tee -a "$OUT_DIR/table.md"
