#!/usr/bin/env bash
# Installs the release tarball with install.sh (sha256 checked), twice (the
# second run must change nothing), starts the installed llm-node as the unit
# would, chats once, stops it with a drain, then `install.sh --uninstall
# --purge` and checks nothing is left. Also: a corrupted tarball is refused.
#
#   sudo tests/packaging/tarball.sh    (FLAVOR, NO_BUILD as for deb.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/packaging/lib.sh
[ "$(id -u)" = 0 ] || fail "run as root"
FLAVOR="${FLAVOR:-native}"
model="${LLM_NODE_TEST_MODEL:-$(./scripts/setup.sh)}"
prefix="$(mktemp -d /opt/llm-node-test.XXXXXX)"; chmod 755 "$prefix"
[ -e /etc/llm-node ] && fail "/etc/llm-node exists here; remove the installed llm-node first"

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
tarball="dist/llm-node-$version-linux-$(uname -m)-$FLAVOR.tar.gz"
if [ -z "${NO_BUILD:-}" ] || [ ! -f "$tarball" ]; then
  step "build ($FLAVOR)"
  ./scripts/build-release.sh --flavor "$FLAVOR" --no-packages ${NO_BUILD:+--no-build} \
    >/tmp/llm-node-build-release.log 2>&1 || { tail -30 /tmp/llm-node-build-release.log; fail "build-release.sh"; }
fi

step "a corrupted release is refused"
bad="$(mktemp -d)"; cp "$tarball" "$tarball.sha256" "$bad/"
printf 'x' >> "$bad/$(basename "$tarball")"
if ./install.sh --prefix "$prefix" "$bad/$(basename "$tarball")" >/dev/null 2>"$bad/err"; then fail "accepted a corrupted tarball"; fi
grep -q 'SHA-256 mismatch' "$bad/err" || fail "unclear refusal: $(cat "$bad/err")"
[ -e "$prefix/bin/llm-node" ] && fail "a refused release left files"
rm -rf "$bad"

step "install.sh (twice) from a file:// URL"
trap './install.sh --uninstall --purge --prefix "$prefix" >/dev/null 2>&1 || true; rm -rf "$prefix"' EXIT
./install.sh --prefix "$prefix" "file://$PWD/$tarball" | tail -3
find "$prefix" /etc/llm-node /etc/systemd/system/llm-node.service -type f -exec sha256sum {} + | sort > /tmp/llm-node-tb.1
./install.sh --prefix "$prefix" "$tarball" >/dev/null
find "$prefix" /etc/llm-node /etc/systemd/system/llm-node.service -type f -exec sha256sum {} + | sort > /tmp/llm-node-tb.2
cmp -s /tmp/llm-node-tb.1 /tmp/llm-node-tb.2 || fail "a second install changed files: $(diff /tmp/llm-node-tb.1 /tmp/llm-node-tb.2)"
grep -q "^ExecStart=$prefix/bin/llm-node$" /etc/systemd/system/llm-node.service || fail "unit ExecStart not under the prefix"
getent passwd llm-node >/dev/null || fail "no llm-node user"

step "serve the bundled model as the unit would"
install -o llm-node -g llm-node -m 0644 "$model" /var/lib/llm-node/models/
start_node /etc/systemd/system/llm-node.service /etc/llm-node/llm-node.env /var/lib/llm-node/models
name="$(curl -fsS "http://127.0.0.1:$PORT/v1/models" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')"
chat_once "$name"
stop_with_drain "$name" llm-node

step "install.sh --uninstall --purge"
./install.sh --uninstall --purge --prefix "$prefix" >/dev/null
trap - EXIT
left="$(find "$prefix" -mindepth 1 ! -type d | head -5)"
[ -z "$left" ] || fail "left under the prefix: $left"
rm -rf "$prefix"
nothing_left /etc/systemd/system/llm-node.service /etc/llm-node /var/lib/llm-node /var/cache/llm-node \
  /var/log/llm-node /var/lib/llm-node-install
echo "PASS tarball ($FLAVOR)"
