#!/usr/bin/env bash
# Builds the reference servers for the benchmark: llama.cpp's own `llama-server`
# (and `llama-bench`, the raw-engine figure) from the llama.cpp that PyPI's
# `llama-cpp-python` sdist vendors. PyPI is used because it is reachable where
# GitHub is not; the sdist carries the full llama.cpp tree, tools included.
#
# Why this version: llama-cpp-sys-2 0.1.161 (our worker's llama.cpp) vendors
# ggml 0.26.0 but only the library sources, not tools/server. No llama-cpp-python
# release vendors exactly that tree; 0.3.36 (llama.cpp 0c1e57098, ggml 0.25.3)
# is the newest and closest. Override with LLAMA_CPP_PYTHON_VERSION.
#
# Build flags match the worker's: llama-cpp-sys-2 builds ggml statically, with
# OpenMP, and with GGML_NATIVE=ON because .cargo/config.toml sets
# `-C target-cpu=native`.
#
# CUDA=1 builds the CUDA variant instead, for scripts/gpu-check.sh: with the
# CUDA 13 wheels (scripts/cuda-env.sh, CUDA_ARCHS as there), the same ggml CUDA
# options as the CUDA worker (no VMM, so no driver library at link time) and a
# portable CPU baseline, into build-cuda-<version>.
#
# Everything lives outside git in $LLM_NODE_CACHE/llama-server (default
# ~/.cache/llm-node). Idempotent: a finished build is reused (FORCE=1 rebuilds).
# Prints the llama-server path on stdout; logs go to stderr. Next to the binary,
# `bench-info.json` records the versions (read by bench/run.sh).
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
JOBS="${JOBS:-2}"
CACHE="${LLM_NODE_CACHE:-$HOME/.cache/llm-node}"
ROOT="$CACHE/llama-server"
SRC="$ROOT/llama_cpp_python-$VERSION"
BUILD="$ROOT/build-$VERSION"
extra_flags=(-DGGML_NATIVE=ON)
if [ "${CUDA:-0}" = 1 ]; then
  # shellcheck source=../scripts/cuda-env.sh
  source "$(dirname "$0")/../scripts/cuda-env.sh"
  BUILD="$ROOT/build-cuda-$VERSION"
  extra_flags=(-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
    -DGGML_CUDA=ON -DGGML_CUDA_NO_VMM=ON -DGGML_CUDA_NCCL=OFF
    -DCMAKE_CUDA_ARCHITECTURES="$CMAKE_CUDA_ARCHITECTURES"
    -DCMAKE_BUILD_RPATH='$ORIGIN' -DCMAKE_INSTALL_RPATH='$ORIGIN')
fi
BIN="$BUILD/bin/llama-server"
INFO="$BUILD/bin/bench-info.json"

log() { echo "build-llama-server: $*" >&2; }

if [ "${FORCE:-0}" != 1 ] && [ -x "$BIN" ] && [ -f "$INFO" ]; then
  log "reusing $BIN"
  echo "$BIN"
  exit 0
fi

for tool in cmake make python3; do
  command -v "$tool" >/dev/null || { log "missing $tool (run scripts/setup.sh)"; exit 1; }
done

mkdir -p "$ROOT/sdist"
tarball="$(ls "$ROOT/sdist"/llama_cpp_python-"$VERSION".tar.gz 2>/dev/null || true)"
if [ -z "$tarball" ]; then
  log "downloading llama-cpp-python==$VERSION sdist from PyPI"
  python3 -m pip download --quiet --no-deps --no-binary :all: --disable-pip-version-check \
    -d "$ROOT/sdist" "llama-cpp-python==$VERSION"
  tarball="$ROOT/sdist/llama_cpp_python-$VERSION.tar.gz"
fi

if [ ! -f "$SRC/vendor/llama.cpp/CMakeLists.txt" ]; then
  log "extracting vendor/llama.cpp from $(basename "$tarball")"
  tmp="$(mktemp -d "$ROOT/.extract.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  tar -xzf "$tarball" -C "$tmp" \
    "llama_cpp_python-$VERSION/vendor/llama.cpp" "llama_cpp_python-$VERSION/CHANGELOG.md"
  # vendor/llama.cpp/.git is a submodule pointer into a .git the sdist lacks.
  rm -f "$tmp/llama_cpp_python-$VERSION/vendor/llama.cpp/.git"
  rm -rf "$SRC"
  mv "$tmp/llama_cpp_python-$VERSION" "$SRC"
fi
LLAMA_DIR="$SRC/vendor/llama.cpp"

# The sdist has no .git: take the llama.cpp commit from the changelog entry of
# this release ("update llama.cpp to ggml-org/llama.cpp@<sha>"), so the binary
# reports it in --version instead of picking up whatever repository surrounds
# the cache directory.
commit="$(awk -v v="## [$VERSION]" '
  index($0, v) == 1 { on = 1; next }
  on && /^## \[/ { exit }
  on && match($0, /llama\.cpp@[0-9a-f]+/) { print substr($0, RSTART + 10, RLENGTH - 10); exit }
' "$SRC/CHANGELOG.md")"
commit="${commit:-unknown}"
ggml_version="$(sed -n 's/^set(GGML_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\))/\2/p' \
  "$LLAMA_DIR/ggml/CMakeLists.txt" | paste -sd.)"

log "configuring llama.cpp $commit (ggml $ggml_version) in $BUILD"
# LLAMA_USE_PREBUILT_UI/LLAMA_BUILD_UI off: the web UI would be fetched from
# Hugging Face or built with npm; the benchmark needs neither.
cmake -S "$LLAMA_DIR" -B "$BUILD" \
  -DCMAKE_BUILD_TYPE=Release \
  "${extra_flags[@]}" \
  -DGGML_OPENMP=ON \
  -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_CURL=OFF \
  -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_UI=OFF \
  -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_BUILD_NUMBER=0 \
  -DLLAMA_BUILD_COMMIT="$commit" \
  >&2

targets=(llama-server)
# (Not `| grep -q`: grep exits at the first match and pipefail then sees cmake's SIGPIPE.)
known_targets="$(cmake --build "$BUILD" --target help 2>/dev/null || true)"
if grep -qw llama-bench <<<"$known_targets"; then
  targets+=(llama-bench)
fi
log "building ${targets[*]} with -j$JOBS (about 5 minutes on 2 cores)"
cmake --build "$BUILD" --config Release -j "$JOBS" --target "${targets[@]}" >&2

bench_bin=""
[ -x "$BUILD/bin/llama-bench" ] && bench_bin="$BUILD/bin/llama-bench"
cat >"$INFO" <<EOF
{
  "llama_cpp_python_version": "$VERSION",
  "llama_cpp_commit": "$commit",
  "ggml_version": "$ggml_version",
  "llama_server": "$BIN",
  "llama_bench": "$bench_bin",
  "cmake_flags": "-DCMAKE_BUILD_TYPE=Release ${extra_flags[*]} -DGGML_OPENMP=ON -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF"
}
EOF
log "done"
echo "$BIN"
