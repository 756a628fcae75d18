#!/usr/bin/env bash
# The test command: install what is missing, build, run the whole suite with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install_deps.sh
bash deploy/build.sh
ctest --test-dir build --output-on-failure -j2 "$@"
