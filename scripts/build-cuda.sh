#!/usr/bin/env bash
# Builds the CUDA worker (`llm-node-worker --features cuda`) on a machine
# without a GPU and without a system CUDA toolkit, from NVIDIA's CUDA 13 wheels
# on PyPI. See docs/gpu.md for the measured time and size.
#
# What it does:
#   1. installs the CUDA 13 wheels (nvcc, runtime, cuBLAS, CCCL, CRT, NVVM,
#      culibos) into $LLM_NODE_CACHE/cuda13/site (once; cached);
#   2. lays out a CUDA root the way CMake's FindCUDAToolkit and nvcc expect it
#      ($ROOT = site/nvidia/cu13): lib64 -> lib and unversioned .so links;
#   3. builds with cargo into its own target dir, for $CUDA_ARCHS.
#
# No libcuda (driver) is linked: the worker's `cuda` feature builds ggml
# without VMM, whose pool is the only user of the driver API, and cudart
# (static) opens the driver at run time. So the wheels need no driver stub,
# and the binary starts on a machine without a driver (CUDA then reports no
# device and the worker runs on the CPU, saying so).
#
# Linking: llama-cpp-sys-2 asks for static cudart/cuBLAS. The wheels ship
# libcudart_static.a and libculibos.a but cuBLAS only as shared libraries, so
# the static cuBLAS names resolve to empty archives and the worker links
# libcublas.so.13/libcublasLt.so.13 dynamically (rpath: $ORIGIN and
# $ORIGIN/../lib, so the two libraries may travel next to the binary).
#
# Environment:
#   CUDA_ARCHS        CMake CUDA architectures (default "80;90;100": A100,
#                     H100/H200, B200; CUDA 13 supports 75 and newer).
#   CUDA_TARGET_DIR   cargo target dir (default $LLM_NODE_CACHE/target-cuda).
#   CUDA_TARGET_CPU   rustc/ggml CPU baseline (default x86-64-v3: AVX2/FMA, so
#                     the binary runs on any recent server, not only this one).
#   JOBS              parallel compile jobs (default: number of CPUs).
#   LLM_NODE_CACHE    cache root (default ~/.cache/llm-node).
# Prints the worker's path on stdout; logs go to stderr.
set -euo pipefail

CACHE="${LLM_NODE_CACHE:-$HOME/.cache/llm-node}"
CUDA_ARCHS="${CUDA_ARCHS:-80;90;100}"
TARGET_DIR="${CUDA_TARGET_DIR:-$CACHE/target-cuda}"
TARGET_CPU="${CUDA_TARGET_CPU:-x86-64-v3}"
JOBS="${JOBS:-$(nproc)}"
TOOLS="$CACHE/cuda13"
SITE="$TOOLS/site"
ROOT="$SITE/nvidia/cu13"
# Pinned so that a cached toolchain and a fresh one are the same toolchain.
WHEELS=(
  "nvidia-cuda-nvcc==13.5.37"
  "nvidia-cuda-runtime==13.5.37"
  "nvidia-cuda-crt==13.5.37"
  "nvidia-nvvm==13.5.37"
  "nvidia-cuda-cccl==13.3.5.0.6"
  "nvidia-cublas==13.10.0.20"
  "nvidia-cuda-culibos==13.5.25"
)

log() { echo "build-cuda: $*" >&2; }
cd "$(dirname "$0")/.."

stamp="$TOOLS/.installed-$(printf '%s\n' "${WHEELS[@]}" | sha256sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  log "installing the CUDA 13 wheels into $SITE"
  rm -rf "$SITE"
  mkdir -p "$TOOLS"
  python3 -m pip install --quiet --no-deps --disable-pip-version-check --target "$SITE" "${WHEELS[@]}" \
    || python3 -m pip install --quiet --no-deps --break-system-packages --target "$SITE" "${WHEELS[@]}"
  touch "$stamp"
fi

# The toolkit layout CMake and the linker expect.
ln -sfn lib "$ROOT/lib64"
for so in cudart cublas cublasLt nvblas; do
  real="$(ls "$ROOT/lib/lib$so.so."* 2>/dev/null | head -1)"
  [ -n "$real" ] && ln -sfn "$(basename "$real")" "$ROOT/lib/lib$so.so"
done
# llama-cpp-sys-2 links `static=cublas_static` and `static=cublasLt_static`;
# the wheels have no static cuBLAS, so empty archives satisfy those names and
# the real (shared) libraries are linked below.
for a in cublas_static cublasLt_static; do
  [ -f "$ROOT/lib/lib$a.a" ] || ar rcs "$ROOT/lib/lib$a.a"
done
export CUDA_PATH="$ROOT" CUDAToolkit_ROOT="$ROOT"
export PATH="$ROOT/bin:$PATH"
export CMAKE_CUDA_COMPILER="$ROOT/bin/nvcc"
export CMAKE_CUDA_ARCHITECTURES="$CUDA_ARCHS"
export CMAKE_BUILD_PARALLEL_LEVEL="$JOBS"
export LIBRARY_PATH="$ROOT/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
export CARGO_TARGET_DIR="$TARGET_DIR"
# RUSTFLAGS replaces .cargo/config.toml's target-cpu=native (this binary is
# meant to run elsewhere). The link args come last on the link line, after the
# static ggml archives that need them. An explicit --target keeps these flags
# off build scripts and proc macros (they run here, without cuBLAS).
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="-C target-cpu=$TARGET_CPU -L native=$ROOT/lib \
-C link-arg=-Wl,--no-as-needed -C link-arg=-lcublas -C link-arg=-lcublasLt \
-C link-arg=-Wl,-rpath,\$ORIGIN:\$ORIGIN/../lib"

log "building llm-node-worker --features cuda for CUDA archs $CUDA_ARCHS (target dir $TARGET_DIR)"
start=$(date +%s)
cargo build --release -p llm-node-worker --features cuda --target "$TRIPLE" -j "$JOBS" >&2
bin="$TARGET_DIR/$TRIPLE/release/llm-node-worker"
log "built $bin in $(( $(date +%s) - start )) s, $(du -h "$bin" | cut -f1)"
log "runtime libraries: libcublas.so.13 and libcublasLt.so.13 from $ROOT/lib, and the NVIDIA driver (>= 580)"
echo "$bin"
