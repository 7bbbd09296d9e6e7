#!/bin/sh
# install.sh: installs an llm-node release on Linux, from a URL or a local file.
#
#   install.sh [--sha256 HEX] [--prefix DIR] [--no-user] RELEASE
#   install.sh --uninstall [--purge] [--prefix DIR]
#
# RELEASE is a .deb, .rpm or .tar.gz of scripts/build-release.sh (http(s)://,
# file:// or a path). Its SHA-256 must match --sha256, or the RELEASE.sha256 file
# published next to it; there is no way to skip the check.
#   .deb / .rpm   go through apt-get/dpkg or dnf/rpm (their maintainer scripts make
#                 the llm-node user and directories, the unit is in the package).
#   .tar.gz       is copied under --prefix (default /usr/local): bin/, lib/llm-node/,
#                 man page, completions; /etc/llm-node/llm-node.env (kept if
#                 present), /etc/systemd/system/llm-node.service (ExecStart under
#                 the prefix), the llm-node system user and /var/{lib,cache,log}/llm-node.
# Running it again with the same release changes nothing; with a new one, upgrades.
# --uninstall removes what a tarball install put down (or the package); --purge
# also removes settings, state (pulled models!), logs and the user.
set -eu

prefix=/usr/local sha="" uninstall=0 purge=0 make_user=1 src=""
die() { echo "install.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --sha256) sha="$2"; shift 2 ;;
    --prefix) prefix="$2"; shift 2 ;;
    --uninstall) uninstall=1; shift ;;
    --purge) purge=1; shift ;;
    --no-user) make_user=0; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) [ -z "$src" ] || die "one release at a time"; src="$1"; shift ;;
  esac
done
[ "$(id -u)" = 0 ] || die "run as root (it installs a system service)"

manifest=/var/lib/llm-node-install/manifest
have() { command -v "$1" >/dev/null 2>&1; }
systemd_up() { [ -d /run/systemd/system ] && have systemctl; }

remove_user() {
  if getent passwd llm-node >/dev/null; then userdel llm-node 2>/dev/null || true; fi
  if getent group llm-node >/dev/null; then groupdel llm-node 2>/dev/null || true; fi
}

if [ "$uninstall" = 1 ]; then
  systemd_up && systemctl disable --now llm-node >/dev/null 2>&1 || true
  if [ -f "$manifest" ]; then
    while IFS= read -r f; do rm -f "$f"; done < "$manifest"
    rm -rf "$(dirname "$manifest")"
    for d in "$prefix/lib/llm-node" "$prefix/share/doc/llm-node"; do rmdir "$d" 2>/dev/null || true; done
    systemd_up && systemctl daemon-reload || true
    if [ "$purge" = 1 ]; then
      rm -rf /etc/llm-node /var/lib/llm-node /var/cache/llm-node /var/log/llm-node
      remove_user
    fi
  elif have dpkg && dpkg -s llm-node >/dev/null 2>&1; then
    if [ "$purge" = 1 ]; then dpkg --purge llm-node; else dpkg --remove llm-node; fi
  elif have rpm && rpm -q llm-node >/dev/null 2>&1; then
    rpm -e llm-node
    [ "$purge" = 1 ] && rm -rf /etc/llm-node /var/lib/llm-node /var/cache/llm-node /var/log/llm-node
  else
    echo "install.sh: llm-node is not installed"; exit 0
  fi
  if [ "$purge" = 1 ]; then echo "llm-node uninstalled (settings, state and user removed)"
  else echo "llm-node uninstalled (settings in /etc/llm-node and state in /var/lib/llm-node kept)"; fi
  exit 0
fi

[ -n "$src" ] || die "which release? (install.sh --help)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
file="$work/$(basename "$src")"
fetch() { # URL-or-path DEST: 1 when it does not exist
  case "$1" in
    http://*|https://*)
      if have curl; then curl -fsSL "$1" -o "$2" 2>/dev/null || return 1
      elif have wget; then wget -q "$1" -O "$2" || return 1
      else die "need curl or wget for $1"; fi ;;
    file://*) [ -f "${1#file://}" ] && cp "${1#file://}" "$2" || return 1 ;;
    *) [ -f "$1" ] && cp "$1" "$2" || return 1 ;;
  esac
}
fetch "$src" "$file" || die "cannot read $src"
if [ -z "$sha" ]; then
  fetch "$src.sha256" "$work/sum" || die "no checksum: pass --sha256 HEX or publish $src.sha256"
  sha="$(cut -d' ' -f1 < "$work/sum")"
fi
echo "$sha  $file" | sha256sum -c --status || die "SHA-256 mismatch for $src (expected $sha)"
echo "install.sh: $(basename "$src"): checksum OK"

case "$file" in
  *.deb)
    if have apt-get; then apt-get install -y -q --reinstall "$file" >/dev/null
    else dpkg -i "$file" >/dev/null; fi
    bin=/usr/bin unit=/lib/systemd/system/llm-node.service ;;
  *.rpm)
    if have dnf; then dnf install -y "$file"; else rpm -U --replacepkgs "$file"; fi
    bin=/usr/bin unit=/usr/lib/systemd/system/llm-node.service ;;
  *.tar.gz|*.tgz)
    tar -xzf "$file" -C "$work"
    root="$(find "$work" -mindepth 2 -maxdepth 2 -name bin -type d | head -1)"
    [ -n "$root" ] && [ -x "$root/llm-node" ] || die "$src: no bin/llm-node inside"
    root="$(dirname "$root")"
    bin="$prefix/bin" unit=/etc/systemd/system/llm-node.service
    mkdir -p "$(dirname "$manifest")"
    : > "$manifest.new"
    put() { # SRC DEST MODE
      install -D -m "$3" "$1" "$2"; echo "$2" >> "$manifest.new"
    }
    put "$root/bin/llm-node" "$bin/llm-node" 0755
    put "$root/bin/llm-node-worker" "$bin/llm-node-worker" 0755
    for f in "$root"/lib/llm-node/*; do
      [ -e "$f" ] && put "$f" "$prefix/lib/llm-node/$(basename "$f")" 0644
    done
    put "$root/share/man/man1/llm-node.1.gz" "$prefix/share/man/man1/llm-node.1.gz" 0644
    put "$root/share/bash-completion/completions/llm-node" "$prefix/share/bash-completion/completions/llm-node" 0644
    put "$root/share/zsh/vendor-completions/_llm-node" "$prefix/share/zsh/site-functions/_llm-node" 0644
    put "$root/share/fish/vendor_completions.d/llm-node.fish" "$prefix/share/fish/vendor_completions.d/llm-node.fish" 0644
    sed "s#/usr/bin/llm-node#$bin/llm-node#" "$root/lib/systemd/system/llm-node.service" > "$work/unit"
    put "$work/unit" "$unit" 0644
    # Previously installed files this release no longer has.
    if [ -f "$manifest" ]; then
      sort "$manifest" > "$work/old"; sort "$manifest.new" > "$work/new"
      comm -23 "$work/old" "$work/new" | while IFS= read -r f; do rm -f "$f"; done
    fi
    mv "$manifest.new" "$manifest"
    if [ "$make_user" = 1 ]; then
      getent group llm-node >/dev/null || groupadd --system llm-node
      getent passwd llm-node >/dev/null || useradd --system --gid llm-node \
        --home-dir /var/lib/llm-node --no-create-home --shell /usr/sbin/nologin llm-node
      for g in video render; do getent group "$g" >/dev/null && usermod -aG "$g" llm-node || true; done
      install -d -o llm-node -g llm-node -m 0750 /var/lib/llm-node /var/lib/llm-node/models \
        /var/cache/llm-node /var/log/llm-node
    fi
    if [ ! -f /etc/llm-node/llm-node.env ]; then
      install -D -m 0640 "$root/etc/llm-node/llm-node.env" /etc/llm-node/llm-node.env
      [ "$make_user" = 1 ] && chgrp llm-node /etc/llm-node/llm-node.env
    fi ;;
  *) die "$src: expected .deb, .rpm or .tar.gz" ;;
esac
systemd_up && systemctl daemon-reload || true

"$bin/llm-node" --version
cat <<EOF2

llm-node is installed ($bin/llm-node, unit $unit).
Next steps:
  1. Put a GGUF model in /var/lib/llm-node/models (owned by llm-node), or pull one
     later with: llm-node pull NAME. Settings: /etc/llm-node/llm-node.env
  2. Set LLM_NODE_API_KEYS / LLM_NODE_ADMIN_KEY there before opening the port;
     LLM_ROUTER_URL to join a router; GPUs: docs/install.md.
  3. systemctl enable --now llm-node && journalctl -u llm-node -f
  4. curl http://127.0.0.1:11435/health
Uninstall: install.sh --uninstall [--purge]
EOF2
