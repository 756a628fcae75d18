#!/usr/bin/env bash
# Creates (or confirms) the Python environment of the Hugging Face reference tests:
#   bash tests/reference/venv.sh DIR
# DIR becomes a virtual environment of /usr/bin/python3 (Debian's interpreter, whose system
# site-packages hold python3-torch 1.13 and numpy) with pinned transformers and its
# dependencies on top. Every package it installs is pinned (==) and installed with --no-deps, so
# nothing unpinned comes in; the pins are the last releases that run on torch 1.13 together.
#
# Idempotent: when DIR already holds exactly these versions (a metadata check, no network, well
# under a second) it does nothing. A DIR made by another interpreter, or with other versions, is
# recreated. Concurrent runs on one DIR serialise on DIR.lock.
#
# Offline use afterwards: the tests load models from local directories only, with
# HF_HUB_OFFLINE=1 and TRANSFORMERS_OFFLINE=1.
set -euo pipefail

[[ $# -eq 1 ]] || { echo "usage: $0 DIR" >&2; exit 2; }
DIR=$1
PY=/usr/bin/python3  # never the python3 on PATH: torch lives in this one's site-packages

PINS=(
  transformers==4.40.2
  tokenizers==0.19.1       # transformers 4.40.2 wants >=0.19,<0.20
  safetensors==0.4.3       # >=0.4.1
  huggingface-hub==0.23.0  # >=0.19.3,<1.0
  filelock==3.14.0
  fsspec==2024.3.1         # huggingface-hub: >=2023.5.0
  packaging==24.0
  regex==2024.4.28
  tqdm==4.66.4
  sentencepiece==0.1.99    # tokenizer parity (libsentencepiece-dev is 0.1.97); no dependencies
  # TensorBoard's own event-file reader for tests/cli/tensorboard.sh: 2.16.2 supports Python
  # 3.9-3.11 and numpy >= 1.12; about 25 s of pip on top of the rest (measured).
  tensorboard==2.16.2
  tensorboard-data-server==0.7.2  # >=0.7.0,<0.8.0
  protobuf==4.25.3         # >=3.19.6,!=4.24.0 (Debian's python3-protobuf is not installed)
  grpcio==1.62.2           # >=1.48.2
  absl-py==2.1.0           # >=0.4
  markdown==3.6            # >=2.6.8
  werkzeug==3.0.3          # >=1.0.1
  markupsafe==2.1.5        # werkzeug: >=2.1.1
)
# From Debian (python3-torch, python3-numpy and their dependencies, system site-packages): torch,
# numpy, PyYAML, requests, typing_extensions, six, setuptools. The final check below proves every
# requirement of the pinned packages is met by one or the other.

[[ -x $PY ]] || { echo "venv.sh: $PY not found (bash deploy/install_deps.sh)" >&2; exit 1; }

mkdir -p "$(dirname "$DIR")"
exec 9>"$DIR.lock"
flock 9

# 0 when DIR is a venv of $PY whose installed versions are exactly PINS (no imports, no network).
pins_ok() {
  [[ -x $DIR/bin/python && -f $DIR/pyvenv.cfg ]] || return 1
  grep -Eq "^home = /usr/bin/?$" "$DIR/pyvenv.cfg" || return 1
  grep -Eq "^include-system-site-packages = true$" "$DIR/pyvenv.cfg" || return 1
  "$DIR/bin/python" - "${PINS[@]}" <<'EOF'
import sys
from importlib import metadata
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    try:
        got = metadata.version(name)
    except metadata.PackageNotFoundError:
        sys.exit(1)
    if got != want:
        sys.exit(1)
EOF
}

if pins_ok; then
  echo "venv.sh: $DIR ready (${PINS[0]})"
  exit 0
fi

start=$(date +%s)
if [[ -e $DIR ]]; then
  echo "venv.sh: $DIR exists but does not hold the pinned versions: recreating it"
  rm -rf "$DIR"
fi
if ! "$PY" -m venv --system-site-packages "$DIR"; then
  echo "venv.sh: '$PY -m venv' failed (Debian: the python3-venv package; bash deploy/install_deps.sh)" >&2
  rm -rf "$DIR"
  exit 1
fi
echo "venv.sh: installing ${PINS[*]}"
if ! "$DIR/bin/python" -m pip install --no-deps --no-input --disable-pip-version-check -q "${PINS[@]}"; then
  rm -rf "$DIR"
  echo "venv.sh: pip install failed" >&2
  exit 1
fi

# Every requirement of the installed packages is met (by a pin or by Debian's system packages),
# and transformers imports with torch and finds both model classes.
if ! "$DIR/bin/python" - "${PINS[@]}" <<'EOF'; then
import sys
from importlib import metadata
from packaging.requirements import Requirement
bad = []
for pin in sys.argv[1:]:
    name = pin.split("==")[0]
    for spec in metadata.requires(name) or []:
        req = Requirement(spec)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an optional extra or another platform
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            bad.append("%s needs %s: not installed" % (name, req))
            continue
        if not req.specifier.contains(have, prereleases=True):
            bad.append("%s needs %s: have %s" % (name, req, have))
if bad:
    sys.exit("venv.sh: unmet requirements:\n  " + "\n  ".join(bad))
import torch, transformers
from transformers import GPT2LMHeadModel, LlamaForCausalLM  # noqa: F401
from tensorboard.backend.event_processing import event_accumulator  # noqa: F401
import tensorboard
print("venv.sh: torch %s, transformers %s, tensorboard %s"
      % (torch.__version__, transformers.__version__, tensorboard.__version__))
EOF
  rm -rf "$DIR"
  exit 1
fi
echo "venv.sh: $DIR created in $(( $(date +%s) - start )) s"
