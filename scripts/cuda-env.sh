# Sourced by scripts/build-cuda.sh and bench/build-llama-server.sh (CUDA=1):
# installs NVIDIA's CUDA 13 toolchain from PyPI wheels into a cached directory
# and exports what CMake, nvcc and the linker need. No GPU, driver or system
# CUDA toolkit is needed to build.
#
# - Wheels (pinned, so a cached toolchain and a fresh one are the same):
#   nvcc, runtime (with libcudart_static.a), CRT headers, NVVM (cicc), CCCL,
#   cuBLAS (shared only) and culibos, into $LLM_NODE_CACHE/cuda13/site.
# - Layout: $CUDA_ROOT = site/nvidia/cu13 holds bin/ include/ lib/ nvvm/ as a
#   toolkit does; nvcc.profile there already adds include/cccl. Added here:
#   lib64 -> lib and unversioned .so links (FindCUDAToolkit looks for them).
# - Exports: CUDA_ROOT, CUDA_PATH, CUDAToolkit_ROOT, PATH, CMAKE_CUDA_COMPILER,
#   CMAKE_CUDA_ARCHITECTURES (from CUDA_ARCHS, default "80;90;100": A100,
#   H100/H200, B200; CUDA 13 builds for 75 and newer), LIBRARY_PATH.
CUDA_CACHE="${LLM_NODE_CACHE:-$HOME/.cache/llm-node}/cuda13"
CUDA_SITE="$CUDA_CACHE/site"
CUDA_ROOT="$CUDA_SITE/nvidia/cu13"
CUDA_WHEELS=(
  "nvidia-cuda-nvcc==13.5.37"
  "nvidia-cuda-runtime==13.5.37"
  "nvidia-cuda-crt==13.5.37"
  "nvidia-nvvm==13.5.37"
  "nvidia-cuda-cccl==13.3.5.0.6"
  "nvidia-cublas==13.10.0.20"
  "nvidia-cuda-culibos==13.5.25"
)
cuda_stamp="$CUDA_CACHE/.installed-$(printf '%s\n' "${CUDA_WHEELS[@]}" | sha256sum | cut -c1-12)"
if [ ! -f "$cuda_stamp" ]; then
  echo "cuda-env: installing the CUDA 13 wheels into $CUDA_SITE" >&2
  rm -rf "$CUDA_SITE"
  mkdir -p "$CUDA_CACHE"
  python3 -m pip install --quiet --no-deps --disable-pip-version-check --target "$CUDA_SITE" "${CUDA_WHEELS[@]}" \
    || python3 -m pip install --quiet --no-deps --break-system-packages --target "$CUDA_SITE" "${CUDA_WHEELS[@]}"
  touch "$cuda_stamp"
fi
ln -sfn lib "$CUDA_ROOT/lib64"
for so in cudart cublas cublasLt nvblas; do
  real="$(ls "$CUDA_ROOT/lib/lib$so.so."* 2>/dev/null | head -1)"
  [ -n "$real" ] && ln -sfn "$(basename "$real")" "$CUDA_ROOT/lib/lib$so.so"
done
export CUDA_ROOT CUDA_PATH="$CUDA_ROOT" CUDAToolkit_ROOT="$CUDA_ROOT"
export PATH="$CUDA_ROOT/bin:$PATH"
export CMAKE_CUDA_COMPILER="$CUDA_ROOT/bin/nvcc"
export CMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-80;90;100}"
export LIBRARY_PATH="$CUDA_ROOT/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
