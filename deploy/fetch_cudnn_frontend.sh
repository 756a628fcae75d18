#!/usr/bin/env bash
# Fetches the cuDNN frontend's C++ headers (header-only; the CUDA backend's attention.cu builds
# cuDNN SDPA graphs with them) from the PyPI wheel nvidia-cudnn-frontend, pinned by version and
# sha256, and unpacks only the headers (cudnn_frontend.h and its tree).
#
#   deploy/fetch_cudnn_frontend.sh DEST_INCLUDE_DIR   wheel (from the cache) -> DEST_INCLUDE_DIR
#   deploy/fetch_cudnn_frontend.sh --download-only    only fill the wheel cache (install_deps.sh)
#
# The wheel is cached in ${XDG_CACHE_HOME:-$HOME/.cache}/chainrule/wheels, so a configure after
# install_deps.sh needs no network. Idempotent: a cached wheel with the right sha256 is not
# fetched again, and DEST_INCLUDE_DIR is left alone when its stamp names this version.
# core/backend/cuda/cuda.cmake runs it at configure time; failures are one line on stderr.
set -euo pipefail

# 1.32.0: the newest release when pinned, and it compiles against the cuDNN 9.19 headers of the
# CUDA 13 toolkit here (it guards newer backend features by the cuDNN version at run time). CUDA
# 13 needs >= 1.12. One wheel (CPython 3.11, manylinux x86_64) is named so the same bytes are
# fetched on every machine, whatever its python or CPU: only its headers are used, and they are
# the same in every wheel of a release.
VERSION=1.32.0
WHEEL="nvidia_cudnn_frontend-${VERSION}-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"
SHA256=c6006556017a4d1c914c52a556c71b1267f2d6a0500f742e7b4edef539878df0
PIP_TAGS=(--only-binary=:all: --platform manylinux_2_28_x86_64 --python-version 3.11
          --implementation cp --abi cp311)

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/chainrule/wheels"
STAMP=".cudnn_frontend_wheel"  # in DEST: "<version> <sha256>" of the unpacked headers

die() { echo "fetch_cudnn_frontend: $*" >&2; exit 1; }

usage="usage: fetch_cudnn_frontend.sh DEST_INCLUDE_DIR | --download-only"
dest=""
download_only=0
for arg in "$@"; do
  case "$arg" in
    --download-only) download_only=1 ;;
    -*) die "unknown option $arg; $usage" ;;
    *) [ -z "$dest" ] || die "one DEST_INCLUDE_DIR expected; $usage"; dest="$arg" ;;
  esac
done
[ -n "$dest" ] || [ "$download_only" = 1 ] || die "$usage"

# A python with pip: /usr/bin/python3 or the one on PATH, else pip inside a venv in the cache
# (Debian's python3-venv ships pip for venvs even where python3-pip is not installed).
find_pip() {
  local py
  for py in /usr/bin/python3 "$(command -v python3 || true)"; do
    [ -n "$py" ] && [ -x "$py" ] || continue
    if "$py" -m pip --version >/dev/null 2>&1; then echo "$py"; return; fi
  done
  for py in /usr/bin/python3 "$(command -v python3 || true)"; do
    [ -n "$py" ] && [ -x "$py" ] || continue
    local venv="$CACHE/pip-venv"
    if [ -x "$venv/bin/python" ] || "$py" -m venv "$venv" >/dev/null 2>&1; then
      if "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        echo "$venv/bin/python"
        return
      fi
    fi
  done
  die "no python3 with pip or venv found (apt-get install python3-pip)"
}

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$SHA256" ]; }

# The pinned wheel in the cache, downloaded with pip when missing or corrupt.
fetch_wheel() {
  local wheel="$CACHE/$WHEEL"
  if sha_ok "$wheel"; then return; fi
  mkdir -p "$CACHE" || die "cannot create the wheel cache $CACHE"
  local py tmp
  py="$(find_pip)"
  tmp="$(mktemp -d "$CACHE/download.XXXXXX")"
  if ! "$py" -m pip download --quiet --no-deps "${PIP_TAGS[@]}" --dest "$tmp" \
      "nvidia-cudnn-frontend==$VERSION" >"$tmp/pip.log" 2>&1; then
    local why
    why="$(grep -v '^\s*$' "$tmp/pip.log" | tail -n 1)"
    rm -rf "$tmp"
    die "pip download nvidia-cudnn-frontend==$VERSION failed: ${why:-no output}"
  fi
  if ! sha_ok "$tmp/$WHEEL"; then
    rm -rf "$tmp"
    die "$WHEEL: missing or sha256 is not the pinned $SHA256"
  fi
  mv -f "$tmp/$WHEEL" "$wheel"
  rm -rf "$tmp"
}

# include/ of the wheel -> $dest (replaced whole, through a temporary sibling directory).
unpack_headers() {
  local stamp_line="$VERSION $SHA256"
  if [ -f "$dest/$STAMP" ] && [ "$(cat "$dest/$STAMP")" = "$stamp_line" ] &&
     [ -f "$dest/cudnn_frontend.h" ]; then
    return
  fi
  if [ -e "$dest" ] && [ ! -f "$dest/$STAMP" ] && [ -n "$(ls -A "$dest" 2>/dev/null)" ]; then
    die "$dest exists, is not empty and was not made by this script; remove it or pick another"
  fi
  local parent tmp py
  parent="$(dirname "$dest")"
  mkdir -p "$parent" || die "cannot create $parent"
  tmp="$(mktemp -d "$parent/.cudnn_frontend.XXXXXX")"
  py="$(command -v python3 || echo /usr/bin/python3)"
  # zipfile rather than unzip: python3 is always here, unzip not always.
  if ! "$py" - "$CACHE/$WHEEL" "$tmp" <<'EOF'
import os, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
n = 0
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        name = info.filename
        if not name.startswith("include/") or name.endswith("/"):
            continue
        rel = os.path.normpath(name[len("include/"):])
        if rel.startswith("..") or os.path.isabs(rel):
            sys.exit(f"unsafe path {name} in the wheel")
        path = os.path.join(out, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with z.open(info) as src, open(path, "wb") as dst:
            dst.write(src.read())
        n += 1
if not os.path.isfile(os.path.join(out, "cudnn_frontend.h")):
    sys.exit("no include/cudnn_frontend.h in the wheel")
EOF
  then
    rm -rf "$tmp"
    die "unpacking the headers of $WHEEL failed"
  fi
  echo "$stamp_line" >"$tmp/$STAMP"
  rm -rf "$dest"
  mv "$tmp" "$dest" || die "cannot move the headers to $dest"
}

fetch_wheel
if [ "$download_only" = 1 ]; then
  echo "fetch_cudnn_frontend: $WHEEL cached in $CACHE"
  exit 0
fi
unpack_headers
echo "fetch_cudnn_frontend: cuDNN frontend $VERSION headers in $dest"
