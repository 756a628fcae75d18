#!/usr/bin/env bash
# Proves the CUDA backend's CMake (core/backend/cuda/cuda.cmake) names every path it needs.
#
# The build machine has every CUDA header symlinked into /usr/local/include, libcudart in
# /usr/local/lib (on the linker's default search path), the toolkit's lib dir in ld.so.conf and
# LIBRARY_PATH pointing at the driver stubs. Any of these hides a missing include directory or
# RPATH: the build passes here and fails on a GPU machine. This script builds the CUDA targets in
# a fresh build dir inside a private mount namespace (unshare -m) where those defaults are gone:
#   - /usr/local/include and /usr/local/lib (and any other default include/library dir holding
#     CUDA files) are replaced by copies of themselves without their CUDA entries;
#   - /etc/ld.so.cache is rebuilt without the toolkit's lib dir, so only RUNPATH can find it;
#   - LIBRARY_PATH, CPATH, LD_LIBRARY_PATH and friends are unset.
# Then it checks each built executable: RUNPATH names the toolkit's lib dir, cuBLASLt, cuDNN and
# nvrtc are NEEDED and resolve (ldd) through it, and neither a shared libcudart (the static
# runtime is the only one) nor libcuda (the driver, absent on build machines) is NEEDED.
#
# Usage: tests/gpu/check_build_paths.sh [BUILD_DIR]   (default build-paths; wiped first)
#   TARGETS="chainrule test_gpu_ops" (default; both link cr_cuda) names what to build; JOBS=2 (default) parallel jobs.
# Exit 0: complete; 1: a check failed; 77: cannot run here (no nvcc, or no unshare/root).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BUILD=$(realpath -m "${1:-$ROOT/build-paths}")
TARGETS=${TARGETS:-chainrule test_gpu_ops}
JOBS=${JOBS:-2}

NVCC=$(command -v nvcc || true)
[[ -z $NVCC && -x /usr/local/cuda/bin/nvcc ]] && NVCC=/usr/local/cuda/bin/nvcc
if [[ -z $NVCC ]]; then echo "check_build_paths: SKIP: no nvcc"; exit 77; fi
CUDA_ROOT=$(dirname "$(dirname "$(realpath "$NVCC")")")  # e.g. /usr/local/cuda-13.0

# ---- outside: re-run this script in a private mount namespace -----------------------------------
if [[ ${CR_PATHS_INNER:-} != 1 ]]; then
  if [[ $(id -u) != 0 ]] || ! unshare -m true 2>/dev/null; then
    echo "check_build_paths: SKIP: needs root and unshare -m (private mount namespace)"
    exit 77
  fi
  # The scratch dir is made and removed out here, where the namespace's bind mounts do not
  # exist: removing it from inside would recurse through them into /usr/local/include itself.
  WORK=$(mktemp -d /tmp/check_build_paths.XXXXXX)
  rc=0
  unshare -m --propagation private env CR_PATHS_INNER=1 CR_PATHS_WORK="$WORK" bash "$0" "$@" || rc=$?
  if ! findmnt -rn -o TARGET | grep -q "^$WORK"; then rm -rf "$WORK"; fi
  exit $rc
fi

# ---- inside the namespace: hide the defaults ---------------------------------------------------
WORK=$CR_PATHS_WORK
fail=0
note() { echo "check_build_paths: $*"; }
bad() { echo "check_build_paths: FAIL: $*"; fail=1; }

# Whether a directory entry is CUDA's: it resolves into the toolkit, or is named like its files.
is_cuda() {
  local target
  target=$(realpath -m "$1")
  [[ $target == "$CUDA_ROOT"/* || $target == /usr/local/cuda/* || $target == /usr/local/cuda-* ]] && return 0
  [[ $(basename "$1") =~ ^(lib)?(cuda|cublas|cudnn|nvrtc|nccl|cufft|curand|cusparse|cusolver|nvJitLink|nvblas|cupti|nvToolsExt|nvtx) ]]
}

# Replaces DIR by a directory of links to its non-CUDA entries. The original stays reachable
# through a second bind mount (links into DIR itself would point back into the replacement).
n=0
shadow_dir() {
  local dir=$1 orig="$WORK/orig$n" shadow="$WORK/shadow$n" hidden=0 e
  n=$((n + 1))
  mkdir -p "$orig" "$shadow"
  mount --bind "$dir" "$orig"
  mount -o remount,bind,ro "$orig"  # nothing done in here may change the real directory
  for e in "$orig"/* "$orig"/.[!.]*; do
    [[ -e $e || -L $e ]] || continue
    if is_cuda "$e"; then hidden=$((hidden + 1)); else ln -s "$e" "$shadow/$(basename "$e")"; fi
  done
  mount --bind "$shadow" "$dir"
  note "hid $hidden CUDA entries of $dir"
}

# The default include and library dirs (the compilers' and the linker's), and which hold CUDA.
defaults=$( { echo /usr/local/include; echo /usr/include
              ld --verbose | grep -o 'SEARCH_DIR("=\?[^"]*")' | sed 's/SEARCH_DIR("=\?\(.*\)")/\1/'
            } | sort -u)
for dir in $defaults; do
  [[ -d $dir && $(realpath "$dir") != "$CUDA_ROOT"* ]] || continue
  for e in "$dir"/*; do
    if is_cuda "$e"; then shadow_dir "$dir"; break; fi
  done
done

# The loader cache without the toolkit's lib dir: only RUNPATH (or nothing) can find its libraries.
grep -hv '^\s*#' /etc/ld.so.conf.d/*.conf 2>/dev/null | grep -v '^\s*include' | while read -r d; do
  [[ -n $d && $(realpath -m "$d") != "$CUDA_ROOT"* && $d != /usr/local/cuda* ]] && echo "$d"
done > "$WORK/ld.so.conf" || true
ldconfig -C "$WORK/ld.so.cache" -f "$WORK/ld.so.conf"
mount --bind "$WORK/ld.so.cache" /etc/ld.so.cache
unset LIBRARY_PATH CPATH C_INCLUDE_PATH CPLUS_INCLUDE_PATH LD_LIBRARY_PATH LD_RUN_PATH CUDA_HOME CUDA_PATH
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

[[ ! -e /usr/local/include/cuda_runtime.h ]] || bad "/usr/local/include/cuda_runtime.h still visible"
if ldconfig -p | grep -q -E 'libcublasLt|libcudnn\.|libcudart'; then bad "the loader cache still lists CUDA libraries"; fi
[[ $fail == 0 ]] || exit 1

# ---- build in a fresh dir ------------------------------------------------------------------------
rm -rf "$BUILD"
mkdir -p "$BUILD"
LOG=$BUILD/check_build_paths
start=$SECONDS
note "configuring $BUILD (nvcc $NVCC)"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$NVCC" \
  > "$LOG.configure.log" 2>&1 || { tail -30 "$LOG.configure.log"; bad "configure failed"; exit 1; }
grep -q 'chainrule: cuDNN ' "$LOG.configure.log" || bad "configure did not find cuDNN (see $LOG.configure.log)"
# shellcheck disable=SC2086
if ! cmake --build "$BUILD" -j"$JOBS" --target $TARGETS > "$LOG.build.log" 2>&1; then
  grep -E -m20 'error|Error|undefined reference' "$LOG.build.log" || tail -30 "$LOG.build.log"
  bad "build of $TARGETS failed (log: $LOG.build.log)"
  exit 1
fi
note "configured and built $TARGETS in $((SECONDS - start)) s"

# ---- check the executables -----------------------------------------------------------------------
exes=$(find "$BUILD/bin" -maxdepth 1 -type f -perm -u+x 2>/dev/null || true)
[[ -n $exes ]] || note "no executables built (TARGETS=$TARGETS): only the compile and archive were checked"
for exe in $exes; do
  dyn=$(readelf -d "$exe")
  readelf -d "$exe" | grep -q -E 'NEEDED.*libcublasLt' || continue  # does not link cr_cuda
  name=$(basename "$exe")
  runpath=$(echo "$dyn" | sed -n 's/.*(\(RUNPATH\|RPATH\)).*\[\(.*\)\]/\2/p')
  ok_dir=0
  IFS=: read -ra dirs <<< "$runpath"
  for d in "${dirs[@]}"; do [[ $(realpath -m "$d") == "$CUDA_ROOT"/* ]] && ok_dir=1; done
  [[ $ok_dir == 1 ]] || bad "$name: RUNPATH '$runpath' has no directory of $CUDA_ROOT"
  for lib in libcublasLt libcudnn libnvrtc; do
    echo "$dyn" | grep -q "NEEDED.*\[$lib\.so" || bad "$name: $lib is not NEEDED"
  done
  if echo "$dyn" | grep -q 'NEEDED.*\[libcudart\.so'; then bad "$name: needs the shared libcudart (static expected)"; fi
  # The static cudart loads the driver when a GPU is first used; a NEEDED libcuda (the stub
  # linked in) would stop the binary from starting at all where no driver is installed.
  if echo "$dyn" | grep -q 'NEEDED.*\[libcuda\.so'; then bad "$name: needs libcuda.so (cannot start without a driver)"; fi
  resolved=$(ldd "$exe")
  if echo "$resolved" | grep -q 'not found'; then
    bad "$name: unresolved libraries: $(echo "$resolved" | grep 'not found' | tr -s ' \t' ' ')"
  fi
  for lib in libcublasLt libcudnn libnvrtc; do
    where=$(echo "$resolved" | awk -v l="$lib.so" 'index($1, l) == 1 {print $3; exit}')
    [[ -n $where && $(realpath -m "$where") == "$CUDA_ROOT"/* ]] ||
      bad "$name: $lib resolves to '${where:-nothing}', not into $CUDA_ROOT"
  done
  note "$name: RUNPATH $runpath; cuBLASLt, cuDNN, nvrtc resolve through it; static cudart"
done

if [[ $fail == 0 ]]; then note "OK"; else note "FAILED"; fi
exit $fail
