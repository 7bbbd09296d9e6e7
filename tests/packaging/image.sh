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
#                                      podman, mmdebstrap: apt-get install podman mmdebstrap)
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
podman build -q --network=host -t localhost/llm-node-prebuilt:test "$ctx" >/dev/null
rm -rf "$ctx"

step "podman build -f Dockerfile"
podman build --network=host --build-arg BUILDER=localhost/llm-node-prebuilt:test \
  --build-arg BASE="$base" --build-arg FLAVOR="$FLAVOR" -t localhost/llm-node:test . >/tmp/llm-node-image-build.log 2>&1 \
  || { tail -30 /tmp/llm-node-image-build.log; fail "podman build"; }
[ "$(podman image inspect -f '{{.Config.User}}' localhost/llm-node:test)" = llm-node ] || fail "image does not run as llm-node"
podman image inspect -f '{{.Config.Healthcheck}}' localhost/llm-node:test | grep -q health/ready || fail "no HEALTHCHECK"
echo "image: $(podman image inspect -f '{{.Size}}' localhost/llm-node:test | numfmt --to=iec) bytes"

step "run it on the bundled model"
PORT="$(free_port)"
models="$(mktemp -d)"; cp "$model" "$models/"; chmod -R a+rX "$models"
cleanup() { podman rm -f llm-node-test >/dev/null 2>&1 || true; rm -rf "$models"; }
trap cleanup EXIT
podman run -d --name llm-node-test --network=host -e LLM_NODE_PORT="$PORT" \
  -e LLM_NODE_BIND_ADDRESS=127.0.0.1 -e LLM_NODE_LOOPBACK_ONLY=true -e LLM_NODE_CTX_SIZE=1024 \
  -e LLM_NODE_THREADS=2 -v "$models:/var/lib/llm-node/models:ro" localhost/llm-node:test >/dev/null
for _ in $(seq 1 240); do
  curl -fs "http://127.0.0.1:$PORT/health/ready" >/dev/null 2>&1 && break
  [ "$(podman inspect -f '{{.State.Running}}' llm-node-test)" = true ] || { podman logs llm-node-test | tail -20; fail "container exited"; }
  sleep 0.5
done
curl -fs "http://127.0.0.1:$PORT/health/ready" >/dev/null || fail "not ready after 120 s"
podman healthcheck run llm-node-test || fail "HEALTHCHECK failed"
name="$(curl -fsS "http://127.0.0.1:$PORT/v1/models" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')"
chat_once "$name"
[ "$(podman exec llm-node-test id -u)" != 0 ] || fail "runs as root"
podman stop -t 60 llm-node-test >/dev/null
podman logs llm-node-test 2>&1 | grep -q 'stopping workers' || fail "no orderly stop in the logs"
podman logs llm-node-test 2>&1 | grep -q 'worker stopped' || fail "the worker was not stopped by the supervisor"
[ "$(podman inspect -f '{{.State.ExitCode}}' llm-node-test)" = 0 ] || fail "exit code $(podman inspect -f '{{.State.ExitCode}}' llm-node-test)"

step "compose file"
venv="$CACHE/pkg-venv"
[ -x "$venv/bin/podman-compose" ] || { python3 -m venv "$venv"; "$venv/bin/pip" install -q podman-compose==1.6.0; }
(cd deploy && LLM_ROUTER_ADMIN_PASSWORD=x "$venv/bin/podman-compose" -f compose.yaml config) > /tmp/llm-node-compose.txt \
  || fail "compose.yaml does not validate"
grep -q 'LLM_ROUTER_URL: http://llm-router:8080' /tmp/llm-node-compose.txt || fail "compose: node lacks the router URL"
grep -q 'dockerfile: router.Dockerfile' /tmp/llm-node-compose.txt || fail "compose: no router service"
podman rmi -f localhost/llm-node:test localhost/llm-node-prebuilt:test >/dev/null 2>&1 || true
echo "PASS image ($FLAVOR)"
