#!/usr/bin/env bash
# Builds the CPU image (Dockerfile) with podman on a machine without any
# container registry, runs it on the bundled model, chats once, checks the
# health check and a draining stop; validates deploy/compose.yaml.
#
# No registry: the base image is made here (mmdebstrap → podman import), and the
# release built on the host (dist/, scripts/build-release.sh) stands in for the
# build stage: an image holding /out, which the Dockerfile's build step skips
# to. The runtime stage is the Dockerfile's own.
#
#   sudo tests/packaging/image.sh     (FLAVOR, NO_BUILD as for deb.sh; needs
#                                      podman, mmdebstrap, runc:
#                                      apt-get install podman mmdebstrap runc;
#                                      RUNTIMES="crun runc": the OCI runtimes to try, in order)
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/packaging/lib.sh
[ "$(id -u)" = 0 ] || fail "run as root (podman import, rootful containers)"
command -v podman >/dev/null && command -v mmdebstrap >/dev/null \
  || fail "needs podman and mmdebstrap (apt-get install podman mmdebstrap)"
FLAVOR="${FLAVOR:-native}"
CACHE="${LLM_NODE_CACHE:-$HOME/.cache/llm-node}"
model="${LLM_NODE_TEST_MODEL:-$(./scripts/setup.sh)}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
stage="dist/llm-node-$version-linux-$(uname -m)-$FLAVOR"
if [ -z "${NO_BUILD:-}" ] || [ ! -d "$stage" ]; then
  step "build ($FLAVOR)"
  ./scripts/build-release.sh --flavor "$FLAVOR" --no-packages ${NO_BUILD:+--no-build} \
    >/tmp/llm-node-build-release.log 2>&1 || { tail -30 /tmp/llm-node-build-release.log; fail "build-release.sh"; }
fi

base=localhost/llm-node-base:bookworm
if ! podman image exists "$base"; then
  step "base image: mmdebstrap bookworm (minbase) → podman import"
  mkdir -p "$CACHE/images"
  tar="$CACHE/images/bookworm-base.tar"
  [ -s "$tar" ] || mmdebstrap --variant=minbase --include=ca-certificates,libgomp1,curl bookworm "$tar.tmp" \
    && mv "$tar.tmp" "$tar"
  podman import --change 'CMD ["/bin/bash"]' "$tar" "$base" >/dev/null
fi

step "build-stage stand-in (the host's $FLAVOR release as /out)"
ctx="$(mktemp -d)"
cp -a "$stage" "$ctx/out"
printf 'FROM %s\nCOPY out/ /out/\n' "$base" > "$ctx/Containerfile"
podman build -q --isolation=chroot --network=host -t localhost/llm-node-prebuilt:test "$ctx" >/dev/null
rm -rf "$ctx"

step "podman build -f Dockerfile"
# --isolation=chroot: RUN steps without an OCI runtime (see "run it" below);
# --format docker: OCI images have no HEALTHCHECK; --layers=false: no cached
# build-stage image left behind (each run's was 248 MB).
podman build --format docker --layers=false --isolation=chroot --network=host --build-arg BUILDER=localhost/llm-node-prebuilt:test \
  --build-arg BASE="$base" --build-arg FLAVOR="$FLAVOR" -t localhost/llm-node:test . >/tmp/llm-node-image-build.log 2>&1 \
  || { tail -30 /tmp/llm-node-image-build.log; fail "podman build"; }
[ "$(podman image inspect -f '{{.Config.User}}' localhost/llm-node:test)" = llm-node ] || fail "image does not run as llm-node"
podman image inspect -f '{{.Config.Healthcheck}}' localhost/llm-node:test | grep -q health/ready || fail "no HEALTHCHECK"
echo "image: $(podman image inspect -f '{{.Size}}' localhost/llm-node:test | numfmt --to=iec) bytes"

step "run it on the bundled model"
PORT="$(free_port)"
models="$(mktemp -d)"; cp "$model" "$models/"; chmod -R a+rX "$models"
# Which OCI runtime can start a container here. Two limits of some hosts (this
# sandbox among them, measured and recorded in docs/install.md):
# - crun 1.x refuses cgroup v1 with an empty v2 hierarchy mounted beside it
#   ("cgroups in hybrid mode not supported"), --cgroups=disabled included;
# - without CAP_SYS_RESOURCE no runtime may raise an rlimit above the host's
#   hard limit, and podman's default RLIMIT_NOFILE is 1048576 ("setrlimit
#   RLIMIT_NOFILE: Operation not permitted"): hence the explicit --ulimit.
# runc (Debian's `runc`) drives cgroup v1 itself and starts the container.
run_args=(--network=host --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 -e LLM_NODE_PORT="$PORT"
  -e LLM_NODE_BIND_ADDRESS=127.0.0.1 -e LLM_NODE_LOOPBACK_ONLY=true -e LLM_NODE_CTX_SIZE=1024
  -e LLM_NODE_THREADS=2 -e LLM_NODE_DRAIN_TIMEOUT_SECS=120 -e LLM_NODE_ALLOW_IGNORE_EOS=true -v "$models:/var/lib/llm-node/models:ro")
cleanup() {
  podman rm -f llm-node-test >/dev/null 2>&1 || true
  podman rmi -f localhost/llm-node:test localhost/llm-node-prebuilt:test >/dev/null 2>&1 || true
  rm -rf "$models"
}
trap cleanup EXIT
runtime=""
for rt in ${RUNTIMES:-crun runc}; do
  command -v "$rt" >/dev/null || { echo "runtime $rt: not installed"; continue; }
  if podman run --rm --runtime "$rt" "${run_args[@]}" --entrypoint /usr/bin/true localhost/llm-node:test \
      >/tmp/llm-node-podman-run.txt 2>&1; then
    runtime="$rt"; echo "runtime $rt: starts containers"; break
  fi
  echo "runtime $rt: cannot start a container here: $(tail -1 /tmp/llm-node-podman-run.txt)"
done
[ -n "$runtime" ] || fail "no OCI runtime can start a container here (tried: ${RUNTIMES:-crun runc}; apt-get install runc)"
podman run -d --runtime "$runtime" --name llm-node-test "${run_args[@]}" localhost/llm-node:test >/dev/null
for _ in $(seq 1 240); do
  curl -fs "http://127.0.0.1:$PORT/health/ready" >/dev/null 2>&1 && break
  [ "$(podman inspect -f '{{.State.Running}}' llm-node-test)" = true ] || { podman logs llm-node-test 2>&1 | tail -20; fail "container exited"; }
  sleep 0.5
done
curl -fs "http://127.0.0.1:$PORT/health/ready" >/dev/null || { podman logs llm-node-test 2>&1 | tail -20; fail "not ready after 120 s"; }
podman healthcheck run llm-node-test || fail "HEALTHCHECK failed"
echo "HEALTHCHECK passes"
[ "$(podman exec llm-node-test id -u)" = 10001 ] || fail "does not run as uid 10001"
[ "$(podman top llm-node-test pid comm | awk '$1 == 1 {print $2}')" = llm-node ] || fail "PID 1 is not llm-node"
podman exec llm-node-test /usr/bin/llm-node --version | grep -q "$FLAVOR" || fail "the image's llm-node is not $FLAVOR"
name="$(curl -fsS "http://127.0.0.1:$PORT/v1/models" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')"
chat_once "$name"
curl -fsS "http://127.0.0.1:$PORT/health" | grep -q "\"flavor\":\"$FLAVOR\"" || fail "/health lacks the build"
# podman stop: SIGTERM to PID 1 (llm-node, no shell) while a stream runs. The
# podman CLI takes about a second to deliver it: on a quiet machine 16 tokens
# are done by then and nothing is left to drain, so this stream is longer.
start_stream "$name" 96
podman stop -t 180 llm-node-test >/dev/null
[ "$(podman inspect -f '{{.State.ExitCode}}' llm-node-test)" = 0 ] || fail "exit code $(podman inspect -f '{{.State.ExitCode}}' llm-node-test)"
podman logs llm-node-test > /tmp/llm-node-image-run.log 2>&1
check_drained /tmp/llm-node-image-run.log
echo "served one chat from the image (podman --runtime $runtime); podman stop drained and stopped the worker"

step "compose file"
venv="$CACHE/pkg-venv"
[ -x "$venv/bin/podman-compose" ] || { python3 -m venv "$venv"; "$venv/bin/pip" install -q podman-compose==1.6.0; }
(cd deploy && LLM_ROUTER_ADMIN_PASSWORD=x "$venv/bin/podman-compose" -f compose.yaml config) > /tmp/llm-node-compose.txt \
  || fail "compose.yaml does not validate"
grep -q 'LLM_ROUTER_URL: http://llm-router:8080' /tmp/llm-node-compose.txt || fail "compose: node lacks the router URL"
grep -q 'dockerfile: router.Dockerfile' /tmp/llm-node-compose.txt || fail "compose: no router service"
echo "PASS image ($FLAVOR, runtime $runtime)"
