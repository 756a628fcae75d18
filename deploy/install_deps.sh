#!/usr/bin/env bash
# Installs what chainrule needs on Debian 12, and nothing when it is all there (idempotent).
# Used by the quickstart, the test command and CI.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git
  libopenblas-dev libopenblas0-openmp libdnnl-dev libyaml-cpp-dev libprotobuf-dev protobuf-compiler
  libopenmpi-dev openmpi-bin
  libcli11-dev nlohmann-json3-dev libfmt-dev
  libpcre2-dev libsentencepiece-dev   # tokenizers: HF byte-level BPE regexes, SentencePiece
  zlib1g-dev libzstd-dev zstd    # prepare's .gz / .zst inputs (zstd: the tests compress with it)
  libssl-dev                     # compress: SHA-256 of the model and tokenizer (OpenSSL EVP)
  chromium fonts-dejavu-core     # score --html: the heat map rendered by a real headless browser
  xz-utils gzip                  # bench/compress: the classic compressors it compares with
  libgtest-dev libgmock-dev libbenchmark-dev
  fortunes                       # the embedded default corpus (/usr/share/games/fortunes)
  python3-torch python3-numpy    # the numerical reference in tests (/usr/bin/python3)
  python3-venv                   # tests/reference/venv.sh: pinned transformers over python3-torch
  slurmctld slurmd slurm-client munge libpmix-dev  # tests/dist/slurm_test.sh: a one-node Slurm, srun --mpi=pmix
  iproute2 procps util-linux     # tests/multinode: hosts as network namespaces (ip, pgrep, nsenter)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#PACKAGES[@]} packages present"
else
  echo "install_deps: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Where nvcc is, cache the pinned cuDNN frontend wheel (its headers give the CUDA backend cuDNN
# attention; core/backend/cuda/cuda.cmake unpacks them at configure time, without network).
# Not fatal: without them the backend builds with our own attention kernels only.
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  "$(dirname "$0")/fetch_cudnn_frontend.sh" --download-only ||
    echo "install_deps: warning: no cuDNN frontend headers; CUDA attention will use our kernels" >&2
fi
