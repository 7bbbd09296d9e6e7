#!/usr/bin/env bash
# Installs the .rpm with rpm itself (Debian's `rpm` package on this machine),
# starts the installed llm-node as the unit would on the bundled model, chats
# once, stops it with SIGTERM while a stream runs (drain, then the supervisor
# stops its worker), erases the package and checks nothing of it is left.
#
# `rpm -i --nodeps`: the package requires the shared libraries it links
# (libc.so.6()(64bit), libgomp.so.1()(64bit), libssl.so.3()(64bit)…) and
# /bin/sh for its scriptlets; on Debian all of them are installed by dpkg and
# unknown to rpm's own, empty database, so rpm refuses the install ("… is
# needed by llm-node"). --nodeps skips only that check; the test checks first
# that every required library resolves here (ldconfig -p). The scriptlets
# (%post: user and directories, %preun, %postun: user, empty folders) run as
# on Fedora/RHEL. Debian's rpm also warns to use alien instead: expected.
# `rpm -e` keeps the state directories (rpm has no purge, docs/install.md):
# the test checks they are the only thing left, then removes them itself.
#
#   sudo tests/packaging/rpm.sh        (FLAVOR, NO_BUILD as for deb.sh; needs
#                                       rpm: apt-get install rpm)
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/packaging/lib.sh
[ "$(id -u)" = 0 ] || fail "run as root (rpm -i)"
command -v rpm >/dev/null || fail "needs rpm (apt-get install rpm)"
FLAVOR="${FLAVOR:-native}"
model="${LLM_NODE_TEST_MODEL:-$(./scripts/setup.sh)}"
rpm -q llm-node >/dev/null 2>&1 && fail "llm-node is already installed in rpm's database; rpm -e it first"
[ -e /etc/llm-node ] && fail "/etc/llm-node exists here; remove the installed llm-node first"

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
pkg="dist/llm-node-$version-linux-$(uname -m)-$FLAVOR.rpm"
if [ -z "${NO_BUILD:-}" ] || [ ! -f "$pkg" ]; then
  step "build ($FLAVOR)"
  ./scripts/build-release.sh --flavor "$FLAVOR" ${NO_BUILD:+--no-build} >/tmp/llm-node-build-release.log 2>&1 \
    || { tail -30 /tmp/llm-node-build-release.log; fail "build-release.sh"; }
fi
(cd dist && sha256sum -c --quiet "$(basename "$pkg").sha256") || fail "checksum"
rpm -qpR "$pkg" 2>/dev/null > /tmp/llm-node-rpm-requires.txt
echo "rpm requires: $(tr '\n' ' ' < /tmp/llm-node-rpm-requires.txt)"
grep -qx '' /tmp/llm-node-rpm-requires.txt && fail "an empty requirement (no rpm database satisfies it)"
while read -r req; do
  case "$req" in
    /bin/sh) [ -x /bin/sh ] || fail "no /bin/sh" ;;
    *'()(64bit)') ldconfig -p | grep -q "^[[:space:]]*${req%()(64bit)} (.*x86-64" || fail "requirement $req not found here" ;;
    rpmlib\(*) ;;
    *) fail "unexpected requirement: $req" ;;
  esac
done < /tmp/llm-node-rpm-requires.txt

step "rpm -i --nodeps"
rpm -i --nodeps "$pkg"
cleanup() {
  rpm -e --nodeps llm-node >/dev/null 2>&1 || true
  rm -rf /var/lib/llm-node /var/cache/llm-node /var/log/llm-node /etc/llm-node
}
trap cleanup EXIT
rpm -q llm-node >/dev/null || fail "rpm does not list llm-node as installed"
rpm -V --nodeps llm-node >/tmp/llm-node-rpm-verify.txt 2>&1 || true
# %post chowns the env file to root:llm-node (group G in rpm -V): expected.
if grep -v -E '^\.+G\.+  c /etc/llm-node/llm-node.env$' /tmp/llm-node-rpm-verify.txt | grep -q .; then
  fail "rpm -V: $(cat /tmp/llm-node-rpm-verify.txt)"
fi
for f in /usr/bin/llm-node /usr/bin/llm-node-worker /usr/lib/systemd/system/llm-node.service \
         /etc/llm-node/llm-node.env /usr/share/man/man1/llm-node.1.gz \
         /usr/share/bash-completion/completions/llm-node /usr/share/zsh/site-functions/_llm-node; do
  [ -e "$f" ] || fail "$f not installed"
done
getent passwd llm-node >/dev/null || fail "%post made no llm-node user"
[ "$(stat -c %U /var/lib/llm-node/models)" = llm-node ] || fail "/var/lib/llm-node/models not owned by llm-node"
[ "$(stat -c %G /etc/llm-node/llm-node.env)" = llm-node ] || fail "env file not readable by the service's group"
v="$(/usr/bin/llm-node --version)"; echo "$v"   # not tee /dev/stderr: it reopens (truncates) a redirected log
echo "$v" | grep -q "$FLAVOR" || fail "--version does not say $FLAVOR"

step "serve the bundled model as the unit would"
install -o llm-node -g llm-node -m 0644 "$model" /var/lib/llm-node/models/
start_node /usr/lib/systemd/system/llm-node.service /etc/llm-node/llm-node.env /var/lib/llm-node/models
name="$(curl -fsS "http://127.0.0.1:$PORT/v1/models" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')"
curl -fsS "http://127.0.0.1:$PORT/health" | grep -q "\"flavor\":\"$FLAVOR\"" || fail "/health lacks the build"
chat_once "$name"
stop_with_drain "$name" llm-node

step "rpm -e"
rpm -e --nodeps llm-node
rpm -q llm-node >/dev/null 2>&1 && fail "still in rpm's database"
# Kept by design (rpm has no purge): the state, cache and log directories.
for d in /var/lib/llm-node /var/cache/llm-node /var/log/llm-node; do
  [ -d "$d" ] || fail "$d went with rpm -e (documented as kept)"
done
rm -rf /var/lib/llm-node /var/cache/llm-node /var/log/llm-node
trap - EXIT
nothing_left /usr/bin/llm-node /usr/bin/llm-node-worker /usr/lib/llm-node /usr/lib/systemd/system/llm-node.service \
  /etc/llm-node /usr/share/man/man1/llm-node.1.gz /usr/share/bash-completion/completions/llm-node \
  /usr/share/zsh/site-functions/_llm-node /usr/share/fish/vendor_completions.d/llm-node.fish \
  /etc/llm-node/llm-node.env.rpmsave
echo "PASS rpm ($FLAVOR)"
