#!/usr/bin/env bash
# The GPU check (issue #18, docs/gpu.md "The GPU check"): on a machine with an
# NVIDIA GPU and no network, with the bundled model fully offloaded,
#   1. checks the driver and that the CUDA worker sees a CUDA device;
#   2. starts llm-node with the CUDA worker and checks the offload it reports
#      (backend CUDA, layers offloaded = all layers, device bytes > 0);
#   3. runs the real-model test binaries found in $BUNDLE/deps (built here by
#      `scripts/gpu-check.sh --pack`), against the same binaries;
#   4. measures generated tokens/s of llm-node and of a CUDA llama-server built
#      from llama.cpp (bench/build-llama-server.sh with CUDA=1) on the same
#      model, slots and context, and prints both with their ratio.
# Results go to $OUT (default ./gpu-check-out): check.json and the logs.
#
# Usage:
#   scripts/gpu-check.sh --pack        (here) builds and lays out $BUNDLE
#   scripts/gpu-check.sh               (on the GPU machine) runs the check
#   scripts/gpu-check.sh --cpu         dry run on a machine without a GPU: the
#                                      same steps with the CPU worker and the
#                                      CPU llama-server, expecting backend CPU
# Environment: BUNDLE (default ./gpu-bundle), MODEL (default
# $BUNDLE/model.gguf, else the cached bundled model), SLOTS (4), CTX (1024 per
# slot), REQUESTS (32), MAX_TOKENS (128), CUBLAS_DIR (where libcublas.so.13
# and libcublasLt.so.13 are, when not next to the worker or on the loader
# path), OUT.
#
# What travels (the device machine takes at most 64 MiB per call): see
# docs/gpu.md. The bundle holds llm-node, the CUDA worker, the CUDA
# llama-server and the test binaries; the model (94 MiB) and cuBLAS (CUDA 13,
# ~600 MiB) must already be on that machine or come in parts.
set -euo pipefail

MODE=gpu
case "${1:-}" in
  --pack) MODE=pack ;;
  --cpu) MODE=cpu ;;
  "") ;;
  *) echo "usage: $0 [--pack|--cpu]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
CACHE="${LLM_NODE_CACHE:-$HOME/.cache/llm-node}"
BUNDLE="${BUNDLE:-$PWD/gpu-bundle}"
OUT="${OUT:-$PWD/gpu-check-out}"
SLOTS="${SLOTS:-4}"
CTX="${CTX:-1024}"
REQUESTS="${REQUESTS:-32}"
MAX_TOKENS="${MAX_TOKENS:-128}"
log() { echo "gpu-check: $*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

if [ "$MODE" = pack ]; then
  # Built here: the CUDA worker (sm_90 only keeps it small unless CUDA_ARCHS
  # says otherwise), the supervisor and test binaries (CPU code, portable
  # baseline), the CUDA llama-server.
  export CUDA_ARCHS="${CUDA_ARCHS:-90}"
  worker="$(scripts/build-cuda.sh)"
  server="$(CUDA=1 bench/build-llama-server.sh)"
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target-cuda}"
  RUSTFLAGS="-C target-cpu=x86-64-v3" cargo build --release -p llm-node --bins >&2
  tests="$(RUSTFLAGS="-C target-cpu=x86-64-v3" cargo test --release -p llm-node-tests \
    --test openai_api --test offload --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["kind"]==["test"]:
        print(m["executable"])')"
  rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/deps"
  cp "$CARGO_TARGET_DIR/release/llm-node" "$worker" "$server" "$BUNDLE/"
  for t in $tests; do cp "$t" "$BUNDLE/deps/"; done
  strip "$BUNDLE"/llm-node "$BUNDLE"/llm-node-worker "$BUNDLE"/llama-server "$BUNDLE"/deps/* 2>/dev/null || true
  du -sh "$BUNDLE" "$BUNDLE"/* "$BUNDLE"/deps/* >&2
  exit 0
fi

mkdir -p "$OUT"
if [ "$MODE" = cpu ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
  NODE="${NODE:-$CARGO_TARGET_DIR/release/llm-node}"
  WORKER="${WORKER:-$CARGO_TARGET_DIR/release/llm-node-worker}"
  SERVER="${SERVER:-$CACHE/llama-server/build-0.3.36/bin/llama-server}"
  TESTS="${TESTS:-}"
  WANT_BACKEND=CPU
else
  NODE="${NODE:-$BUNDLE/llm-node}"
  WORKER="${WORKER:-$BUNDLE/llm-node-worker}"
  SERVER="${SERVER:-$BUNDLE/llama-server}"
  TESTS="${TESTS:-$(ls "$BUNDLE"/deps/* 2>/dev/null || true)}"
  WANT_BACKEND=CUDA
fi
MODEL="${MODEL:-$BUNDLE/model.gguf}"
[ -f "$MODEL" ] || MODEL="$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf"
for f in "$NODE" "$WORKER" "$MODEL"; do
  [ -e "$f" ] || fail "missing $f (run --pack where it can be built, see docs/gpu.md)"
done
if [ ! -x "$SERVER" ]; then
  # The dry run may lack the reference server (bench/build-llama-server.sh builds it).
  [ "$MODE" = cpu ] || fail "missing $SERVER (run --pack, see docs/gpu.md)"
  log "no llama-server at $SERVER: the dry run skips the comparison"
  SERVER=""
fi
[ -n "${CUBLAS_DIR:-}" ] && export LD_LIBRARY_PATH="$CUBLAS_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# 1. Driver and device.
if [ "$MODE" = gpu ]; then
  command -v nvidia-smi >/dev/null || fail "no nvidia-smi: no NVIDIA driver here"
  driver="$(nvidia-smi --query-gpu=driver_version,name,memory.total --format=csv,noheader | head -1)"
  log "driver/GPU: $driver"
  major="${driver%%.*}"
  [ "$major" -ge 580 ] || fail "driver $major is older than CUDA 13 needs (580)"
  missing="$(ldd "$WORKER" | grep 'not found' || true)"
  [ -z "$missing" ] || fail "the worker cannot load: $missing (set CUBLAS_DIR)"
fi
version="$("$WORKER" --version)"
log "worker: $version"
case "$version" in
  *"backends: "*"$WANT_BACKEND"*) ;;
  *) fail "the worker has no $WANT_BACKEND backend" ;;
esac
if [ "$MODE" = gpu ]; then
  case "$version" in *"GPUs: none"*) fail "the CUDA worker sees no device" ;; esac
fi

# 2. Offload truth on the real model.
port_file="$OUT/node.port"
"$NODE" --host 127.0.0.1 --port 0 --loopback-only --model "smollm2=$MODEL" \
  --worker-bin "$WORKER" --n-gpu-layers 999 --parallel "$SLOTS" --ctx-size "$CTX" \
  --allow-ignore-eos >"$port_file" 2>"$OUT/node.log" &
node_pid=$!
server_pid=""
cleanup() {
  kill "$node_pid" 2>/dev/null || true
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 300); do
  grep -q 'listening on' "$port_file" 2>/dev/null && break
  sleep 0.2
done
base="$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$port_file" | head -1)"
[ -n "$base" ] || fail "llm-node did not start (see $OUT/node.log)"
for _ in $(seq 300); do
  curl -sf "$base/admin/models" | grep -q '"state":"ready"' && break
  sleep 0.5
done
curl -sf "$base/admin/models" >"$OUT/admin-models.json"
curl -sf "$base/admin/gpus" >"$OUT/admin-gpus.json"
python3 - "$OUT/admin-models.json" "$WANT_BACKEND" <<'PY' || fail "offload check (see $OUT/admin-models.json)"
import json, sys
m = json.load(open(sys.argv[1]))["models"][0]
o, want = m["offload"], sys.argv[2]
print(f"gpu-check: offload {o['backend']} {o['layers_offloaded']}/{o['layers_total']}, "
      f"device {o['device_bytes'] >> 20} MiB; estimate device {m['estimate']['device_bytes'] >> 20} MiB",
      file=sys.stderr)
assert o["backend"] == want, o
if want == "CPU":
    assert o["layers_offloaded"] == 0 and o["device_bytes"] == 0, o
else:
    assert o["layers_offloaded"] == o["layers_total"] > 0, o
    assert o["device_bytes"] > 0, o
PY

# 3. The real-model tests, against the same binaries.
tests_ok=skipped
if [ -n "$TESTS" ]; then
  tests_ok=true
  for t in $TESTS; do
    log "running $(basename "$t")"
    LLM_NODE_BIN="$NODE" LLM_NODE_TEST_MODEL="$MODEL" "$t" --test-threads 1 \
      >"$OUT/$(basename "$t").log" 2>&1 || tests_ok=false
    tail -3 "$OUT/$(basename "$t").log" >&2
  done
fi

# 4. Tokens/s: llm-node, then llama-server, same model, slots and context.
bench() {
  python3 - "$1" "$REQUESTS" "$SLOTS" "$MAX_TOKENS" <<'PY'
import json, sys, threading, time, urllib.request
base, n, conc, max_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
body = lambda i: json.dumps({"model": "smollm2", "prompt": f"Story {i}: once upon a time",
    "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}).encode()
done, lock, errors = [0], threading.Lock(), []
def worker(ids):
    for i in ids:
        req = urllib.request.Request(base + "/v1/completions", body(i), {"Content-Type": "application/json"})
        try:
            r = json.load(urllib.request.urlopen(req, timeout=300))
            with lock: done[0] += r["usage"]["completion_tokens"]
        except Exception as e:
            errors.append(str(e))
t0 = time.time()
ts = [threading.Thread(target=worker, args=(range(k, n, conc),)) for k in range(conc)]
[t.start() for t in ts]; [t.join() for t in ts]
wall = time.time() - t0
print(json.dumps({"tokens": done[0], "seconds": round(wall, 3), "tok_s": round(done[0] / wall, 1), "errors": errors[:3]}))
PY
}
bench "$base" >"$OUT/bench-llm-node.json"
kill "$node_pid"; wait "$node_pid" 2>/dev/null || true
if [ -n "$SERVER" ]; then
  "$SERVER" -m "$MODEL" --host 127.0.0.1 --port 18799 -np "$SLOTS" -c $((SLOTS * CTX)) \
    -ngl 999 >"$OUT/llama-server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 300); do curl -sf http://127.0.0.1:18799/health >/dev/null && break; sleep 0.5; done
  bench http://127.0.0.1:18799 >"$OUT/bench-llama-server.json"
else
  echo '{"tokens": 0, "seconds": 0, "tok_s": 0, "errors": [], "skipped": true}' >"$OUT/bench-llama-server.json"
fi

python3 - "$OUT" "$MODE" "$tests_ok" "$version" <<'PY'
import json, sys
out, mode, tests, version = sys.argv[1:5]
a = json.load(open(f"{out}/bench-llm-node.json")); b = json.load(open(f"{out}/bench-llama-server.json"))
m = json.load(open(f"{out}/admin-models.json"))["models"][0]
r = {"mode": mode, "worker": version, "offload": m["offload"], "estimate": m["estimate"],
     "tests_passed": tests, "llm_node": a, "llama_server": b,
     "ratio": round(a["tok_s"] / b["tok_s"], 3) if b["tok_s"] else None}
json.dump(r, open(f"{out}/check.json", "w"), indent=1)
print(f"gpu-check: llm-node {a['tok_s']} tok/s, llama-server {b['tok_s']} tok/s, ratio {r['ratio']}; tests: {tests}")
sys.exit(0 if tests != "false" and not a["errors"] and not b["errors"] else 1)
PY
