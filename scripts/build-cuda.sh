#!/usr/bin/env bash
# Builds the CUDA worker (`llm-node-worker --features cuda`) on a machine
# without a GPU and without a system CUDA toolkit, from NVIDIA's CUDA 13 wheels
# on PyPI (scripts/cuda-env.sh). See docs/gpu.md for time, size and driver.
#
# No libcuda (driver) is linked: the worker's `cuda` feature builds ggml
# without VMM, whose pool is the only user of the driver API, and the static
# cudart opens the driver at run time. So no driver stub is needed here, and
# the binary starts on a machine without a driver (CUDA then finds no device
# and the worker runs on the CPU, saying so).
#
# Linking: llama-cpp-sys-2 asks for static cudart and cuBLAS. The wheels ship
# libcudart_static.a and libculibos.a but cuBLAS only as shared libraries, so
# the static cuBLAS names resolve to empty archives and the worker links
# libcublas.so.13 / libcublasLt.so.13 dynamically, with rpath $ORIGIN and
# $ORIGIN/../lib so the two libraries may travel next to the binary.
#
# Environment:
#   CUDA_ARCHS        CMake CUDA architectures (default "80;90;100").
#   CUDA_TARGET_DIR   cargo target dir (default $LLM_NODE_CACHE/target-cuda).
#   CUDA_TARGET_CPU   CPU baseline for rustc and ggml (default x86-64-v3,
#                     AVX2/FMA: runs on any recent server, not only this one).
#   JOBS              parallel compile jobs (default: number of CPUs).
# Prints the worker's path on stdout; logs go to stderr.
set -euo pipefail

CACHE="${LLM_NODE_CACHE:-$HOME/.cache/llm-node}"
TARGET_DIR="${CUDA_TARGET_DIR:-$CACHE/target-cuda}"
TARGET_CPU="${CUDA_TARGET_CPU:-x86-64-v3}"
JOBS="${JOBS:-$(nproc)}"
log() { echo "build-cuda: $*" >&2; }
cd "$(dirname "$0")/.."
# shellcheck source=cuda-env.sh
source scripts/cuda-env.sh

ROOT="$CUDA_ROOT"
# llama-cpp-sys-2 links `static=cublas_static` and `static=cublasLt_static`:
# empty archives, the shared libraries are linked below.
for a in cublas_static cublasLt_static; do
  [ -f "$ROOT/lib/lib$a.a" ] || ar rcs "$ROOT/lib/lib$a.a"
done
export CMAKE_BUILD_PARALLEL_LEVEL="$JOBS"
export CARGO_TARGET_DIR="$TARGET_DIR"
# RUSTFLAGS replaces .cargo/config.toml's target-cpu=native (this binary is
# meant to run elsewhere). Link args come last on the link line, after the
# static ggml archives that need them. An explicit --target keeps these flags
# off build scripts and proc macros (they run here, without cuBLAS).
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="-C target-cpu=$TARGET_CPU -L native=$ROOT/lib \
-C link-arg=-Wl,--no-as-needed -C link-arg=-lcublas -C link-arg=-lcublasLt \
-C link-arg=-Wl,-rpath,\$ORIGIN:\$ORIGIN/../lib"

log "building llm-node-worker --features cuda for CUDA archs $CMAKE_CUDA_ARCHITECTURES (target dir $TARGET_DIR)"
start=$(date +%s)
cargo build --release -p llm-node-worker --features cuda --target "$TRIPLE" -j "$JOBS" >&2
bin="$TARGET_DIR/$TRIPLE/release/llm-node-worker"
log "built $bin in $(( $(date +%s) - start )) s, $(du -h "$bin" | cut -f1)"
log "at run time it needs libcublas.so.13 and libcublasLt.so.13 (next to it, in ../lib, or on the loader path; $ROOT/lib here) and an NVIDIA driver for CUDA 13 (>= 580) to use a GPU"
echo "$bin"
