# Shared steps of tests/packaging/*.sh: start an installed llm-node the way
# deploy/llm-node.service would (its Environment= lines, its EnvironmentFile,
# as its User=), chat once, stop it with SIGTERM to the supervisor alone
# (KillMode=mixed) while a stream is in flight, and check the drain.
# Needs root, curl, python3. systemd need not be PID 1.

fail() { echo "FAIL: $*" >&2; [ -n "${LOG:-}" ] && [ -f "$LOG" ] && tail -40 "$LOG" >&2; exit 1; }
step() { echo "== $*"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# unit_env UNIT ENVFILE: the environment the unit gives its process, one VAR=VALUE a line.
unit_env() {
  sed -n 's/^Environment=//p' "$1" | tr ' ' '\n'
  [ -f "$2" ] && grep -E '^[A-Za-z_][A-Za-z0-9_]*=' "$2" || true
}

# start_node UNIT ENVFILE MODEL_DIR: sets PID, PORT, LOG.
start_node() {
  local unit="$1" envfile="$2" models="$3" exe user
  exe="$(sed -n 's/^ExecStart=//p' "$unit")"
  user="$(sed -n 's/^User=//p' "$unit")"
  [ -x "$exe" ] || fail "ExecStart $exe is not executable"
  PORT="$(free_port)"
  LOG="$(mktemp /tmp/llm-node-pkg-test.XXXXXX.log)"
  chmod 644 "$LOG"
  mapfile -t vars < <(unit_env "$unit" "$envfile")
  # The unit's StateDirectory/CacheDirectory/LogsDirectory exist (maintainer
  # scripts or install.sh made them); the test adds its own port and model folder.
  # setsid: its own session, as systemd would start it, so SIGTERM reaches
  # only what we aim it at.
  setsid runuser -u "$user" -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "${vars[@]}" \
    LLM_NODE_BIND_ADDRESS=127.0.0.1 LLM_NODE_PORT="$PORT" LLM_NODE_LOOPBACK_ONLY=true \
    LLM_NODE_MODELS_DIR="$models" LLM_NODE_ALLOW_IGNORE_EOS=true \
    LLM_NODE_CTX_SIZE=1024 LLM_NODE_THREADS=2 LLM_NODE_PARALLEL=2 RUST_LOG=info \
    LLM_NODE_DRAIN_TIMEOUT_SECS=120 \
    "$exe" >"$LOG" 2>&1 &
  PID=$!
  for _ in $(seq 1 240); do
    curl -fs "http://127.0.0.1:$PORT/health/ready" >/dev/null 2>&1 && return 0
    kill -0 "$PID" 2>/dev/null || fail "llm-node exited at start"
    sleep 0.5
  done
  fail "llm-node not ready after 120 s"
}

# The supervisor process (runuser's child) and its workers.
supervisor_pid() { pgrep -P "$PID" -x llm-node || true; }

chat_once() {
  local out
  out="$(curl -fsS "http://127.0.0.1:$PORT/v1/chat/completions" -H 'content-type: application/json' \
    -d '{"model":"'"$1"'","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}')" \
    || fail "chat request failed"
  echo "$out" | python3 -c 'import json,sys; r=json.load(sys.stdin); c=r["choices"][0]; assert c["message"]["content"].strip(), r; print("chat:", repr(c["message"]["content"][:60]))' \
    || fail "chat answer malformed: $out"
}

# start_stream MODEL [TOKENS]: a stream of TOKENS (default 16; ignore_eos) in flight once this
# returns (first token within 60 s: the machine may be loaded); sets STREAM
# (its output) and STREAM_PID (its curl).
start_stream() {
  STREAM="$(mktemp)"
  curl -sSN "http://127.0.0.1:$PORT/v1/chat/completions" -H 'content-type: application/json' \
    -d '{"model":"'"$1"'","stream":true,"ignore_eos":true,"max_tokens":'"${2:-16}"',"messages":[{"role":"user","content":"Count to one hundred."}]}' \
    >"$STREAM" 2>&1 &
  STREAM_PID=$!
  for _ in $(seq 1 600); do
    grep -q '"content"' "$STREAM" && break
    kill -0 "$STREAM_PID" 2>/dev/null || break
    sleep 0.1
  done
  grep -q '"content"' "$STREAM" || fail "the stream produced nothing: $(head -c 300 "$STREAM")"
}

# check_drained LOGFILE: the stream from start_stream ended normally, and the
# log shows drain → stopping workers → worker stopped, with no escalation,
# crash or drain timeout.
check_drained() {
  local log="$1" drain stopping stopped
  wait "$STREAM_PID" || true
  grep -q 'data: \[DONE\]' "$STREAM" || fail "the in-flight stream was cut off: $(tail -c 300 "$STREAM")"
  grep -q '"finish_reason":"length"' "$STREAM" || fail "the stream did not finish normally"
  rm -f "$STREAM"
  drain="$(grep -n 'draining before shutdown' "$log" | head -1 | cut -d: -f1)"
  stopping="$(grep -n 'stopping workers' "$log" | head -1 | cut -d: -f1)"
  stopped="$(grep -n 'worker stopped' "$log" | head -1 | cut -d: -f1)"
  [ -n "$drain" ] || fail "no drain log line"
  [ -n "$stopping" ] && [ -n "$stopped" ] || fail "no 'stopping workers' / 'worker stopped' lines"
  [ "$drain" -lt "$stopping" ] && [ "$stopping" -lt "$stopped" ] \
    || fail "out of order: drain@$drain stopping@$stopping stopped@$stopped"
  ! grep -Eq 'still running; sending|worker crashed|drain timeout' "$log" \
    || fail "a worker was escalated, crashed or cut off: $(grep -E 'still running|crashed|drain timeout' "$log")"
  echo "drain: stream finished, log order drain@$drain < stopping workers@$stopping < worker stopped@$stopped"
}

# stop_with_drain MODEL USER: SIGTERM to the supervisor alone while a stream
# runs; check_drained, and no process of the service user is left.
stop_with_drain() {
  local sup wpid user="$2"
  sup="$(supervisor_pid)"; [ -n "$sup" ] || fail "no supervisor process under $PID"
  wpid="$(pgrep -u "$user" -x llm-node-worker | head -1)"; [ -n "$wpid" ] || fail "no worker process"
  start_stream "$1"
  kill -TERM "$sup"          # KillMode=mixed: the main process only
  for _ in $(seq 1 300); do kill -0 "$PID" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$PID" 2>/dev/null && fail "llm-node still running 150 s after SIGTERM"
  check_drained "$LOG"
  kill -0 "$wpid" 2>/dev/null && fail "worker $wpid outlived the supervisor"
  pgrep -u "$user" >/dev/null && fail "processes of $user left: $(pgrep -u "$user" -a)"
  rm -f "$LOG"
}

# nothing_left PATH...: none of them exists, nor the llm-node user or group.
nothing_left() {
  local p
  for p in "$@"; do [ -e "$p" ] && fail "$p left behind"; done
  getent passwd llm-node >/dev/null && fail "user llm-node left behind"
  getent group llm-node >/dev/null && fail "group llm-node left behind"
  return 0
}
