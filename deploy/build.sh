#!/usr/bin/env bash
# Configures and builds chainrule into build/ (Release). The CUDA backend is included when nvcc
# is found (on PATH or in /usr/local/cuda/bin), with architectures 80;90 unless
# CMAKE_CUDA_ARCHITECTURES is set.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build -j"$(nproc)"
