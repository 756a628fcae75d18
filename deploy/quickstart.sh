#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine: install, build, prepare the default corpus,
# train the default config (progress on stdout), evaluate on the whole val split, and sample.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install_deps.sh
bash deploy/build.sh
[ -f data/fortunes/dataset.json ] || build/bin/chainrule prepare --tokenizer char --out data/fortunes
build/bin/chainrule train configs/default.yaml "$@"
echo
echo "== evaluation (whole val split) =="
build/bin/chainrule eval runs/default
echo
echo "== sample =="
build/bin/chainrule sample runs/default --prompt "The " --max-new-tokens 400 --seed 1
