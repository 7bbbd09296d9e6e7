#!/usr/bin/env bash
# Builds the .deb (scripts/build-release.sh), installs it with dpkg, starts the
# installed llm-node as the unit would on the bundled model, chats once, stops
# it with SIGTERM while a stream runs (drain, then the supervisor stops its
# worker), purges the package and checks nothing is left. Also inspects the .rpm.
#
#   sudo tests/packaging/deb.sh        (FLAVOR=portable|native, default native;
#                                        NO_BUILD=1 packs what is already built)
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/packaging/lib.sh
[ "$(id -u)" = 0 ] || fail "run as root (dpkg -i)"
FLAVOR="${FLAVOR:-native}"
model="${LLM_NODE_TEST_MODEL:-$(./scripts/setup.sh)}"
dpkg -s llm-node >/dev/null 2>&1 && fail "llm-node is already installed here; remove it first"

step "build ($FLAVOR)"
./scripts/build-release.sh --flavor "$FLAVOR" ${NO_BUILD:+--no-build} >/tmp/llm-node-build-release.log 2>&1 \
  || { tail -30 /tmp/llm-node-build-release.log; fail "build-release.sh"; }
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
deb="dist/llm-node-$version-linux-$(uname -m)-$FLAVOR.deb"
rpm="dist/llm-node-$version-linux-$(uname -m)-$FLAVOR.rpm"
[ -f "$deb" ] && [ -f "$rpm" ] || fail "no $deb / $rpm"
(cd dist && sha256sum -c --quiet "$(basename "$deb").sha256" "$(basename "$rpm").sha256") || fail "checksums"

step "rpm contents"
if command -v rpm >/dev/null; then
  rpm -qlp "$rpm" 2>/dev/null | sort > /tmp/llm-node-rpm.list
  for f in /usr/bin/llm-node /usr/bin/llm-node-worker /usr/lib/systemd/system/llm-node.service \
           /etc/llm-node/llm-node.env /usr/share/man/man1/llm-node.1.gz \
           /usr/share/bash-completion/completions/llm-node; do
    grep -qx "$f" /tmp/llm-node-rpm.list || fail "rpm lacks $f"
  done
  rpm -qp --scripts "$rpm" 2>/dev/null | grep -q 'useradd --system' || fail "rpm has no user-creating %post"
  echo "rpm: $(wc -l < /tmp/llm-node-rpm.list) files, %post makes the user"
else
  echo "rpm not installed: skipped the .rpm inspection"
fi

step "dpkg -i"
dpkg -i "$deb" >/dev/null
trap 'dpkg --purge llm-node >/dev/null 2>&1 || true' EXIT
for f in /usr/bin/llm-node /usr/bin/llm-node-worker /lib/systemd/system/llm-node.service \
         /etc/llm-node/llm-node.env /usr/share/man/man1/llm-node.1.gz \
         /usr/share/bash-completion/completions/llm-node /usr/share/zsh/vendor-completions/_llm-node; do
  [ -e "$f" ] || fail "$f not installed"
done
getent passwd llm-node >/dev/null || fail "no llm-node user"
[ "$(stat -c %U /var/lib/llm-node/models)" = llm-node ] || fail "/var/lib/llm-node/models not owned by llm-node"
dpkg-query -W -f='${Conffiles}\n' llm-node | grep -q /etc/llm-node/llm-node.env || fail "env file is not a conffile"
v="$(/usr/bin/llm-node --version)"; echo "$v"   # not tee /dev/stderr: it reopens (truncates) a redirected log
echo "$v" | grep -q "$FLAVOR" || fail "--version does not say $FLAVOR"
man -l /usr/share/man/man1/llm-node.1.gz 2>/dev/null | grep -q -- '--drain-timeout-secs' \
  || zcat /usr/share/man/man1/llm-node.1.gz | grep -q 'drain\\-timeout\\-secs' || fail "man page lacks the flags"

step "serve the bundled model as the unit would"
install -o llm-node -g llm-node -m 0644 "$model" /var/lib/llm-node/models/
start_node /lib/systemd/system/llm-node.service /etc/llm-node/llm-node.env /var/lib/llm-node/models
name="$(curl -fsS "http://127.0.0.1:$PORT/v1/models" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')"
curl -fsS "http://127.0.0.1:$PORT/health" | grep -q "\"flavor\":\"$FLAVOR\"" || fail "/health lacks the build"
chat_once "$name"
stop_with_drain "$name" llm-node

step "dpkg --purge"
dpkg --purge llm-node >/dev/null
trap - EXIT
dpkg -s llm-node >/dev/null 2>&1 && fail "still installed"
nothing_left /usr/bin/llm-node /usr/bin/llm-node-worker /usr/lib/llm-node /lib/systemd/system/llm-node.service \
  /etc/llm-node /var/lib/llm-node /var/cache/llm-node /var/log/llm-node /usr/share/doc/llm-node \
  /usr/share/man/man1/llm-node.1.gz /usr/share/bash-completion/completions/llm-node \
  /usr/share/zsh/vendor-completions/_llm-node /usr/share/fish/vendor_completions.d/llm-node.fish
ls /var/lib/dpkg/info/llm-node.* >/dev/null 2>&1 && fail "dpkg metadata left"
echo "PASS deb ($FLAVOR)"
