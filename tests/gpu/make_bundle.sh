#!/usr/bin/env bash
# Packs chainrule for a bare GPU machine (CUDA driver, PyTorch's CUDA wheels, no apt, no network,
# at most 64 MiB carried): one compressed archive holding
#   bin/      chainrule, test_gpu_ops, test_nccl (RUNPATH $ORIGIN/../lib), mpirun/orterun/orted wrappers
#   lib/      the non-CUDA shared libraries they need (the ldd closure minus glibc and minus the
#             CUDA libraries, which the GPU machine takes from PyTorch's site-packages):
#             protobuf, yaml-cpp, fmt, OpenBLAS, oneDNN, gomp, libstdc++, Open MPI, PMIx...
#   lib/openmpi, lib/pmix   Open MPI's and PMIx's plugins; share/, etc/: their help and config,
#             relocated through OPAL_PREFIX and the component-path variables (bin/mpirun sets them)
#   tests/, bench/gpu/, configs/   the scripts and configs of tests/gpu (the bundle root is the
#             SOURCE_DIR they take), device_check.sh at the top
# and proves it: unpacks into a temp dir and runs its binaries under `env -i`, with the system's
# Open MPI hidden (unshare -m + empty bind mounts) where the kernel allows it, up to the point
# where they need a GPU (--help, a CPU training run, mpirun -np 2 of a CPU run, test_gpu_ops and
# the device check exiting as skipped).
#
# Usage: tests/gpu/make_bundle.sh [--no-build] [--no-check]
#   BUILD_DIR (default build): the build to pack (configured and built here unless --no-build)
#   OUT_DIR   (default build-bundle): where chainrule-gpu.tar.xz is written
set -euo pipefail

SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD_DIR=$(realpath -m "${BUILD_DIR:-$SRC/build}")
OUT_DIR=$(realpath -m "${OUT_DIR:-$SRC/build-bundle}")
NAME=chainrule-gpu
ARCHIVE=$OUT_DIR/$NAME.tar.xz
LIMIT=$((64 * 1024 * 1024))
build=1 check=1
for a in "$@"; do
  case $a in
    --no-build) build=0 ;;
    --no-check) check=0 ;;
    *) echo "usage: $0 [--no-build] [--no-check]" >&2; exit 2 ;;
  esac
done
say() { echo "make_bundle: $*"; }
die() { echo "make_bundle: FAIL: $*" >&2; exit 1; }

# ---- tools -------------------------------------------------------------------------------------
if ! command -v patchelf >/dev/null; then  # Debian's patchelf rewrites RUNPATH (idempotent)
  say "installing patchelf"
  apt-get install -y patchelf >/dev/null || die "patchelf is needed: apt-get install patchelf"
fi

# ---- build -------------------------------------------------------------------------------------
if [[ $build -eq 1 ]]; then
  [[ -f $BUILD_DIR/CMakeCache.txt ]] || cmake -S "$SRC" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release
  cmake --build "$BUILD_DIR" -j2 --target chainrule test_gpu_ops test_nccl
fi
for b in chainrule test_gpu_ops test_nccl; do
  [[ -x $BUILD_DIR/bin/$b ]] || die "no $BUILD_DIR/bin/$b (build it, or drop --no-build)"
done
has_cuda() { grep -q '/cr_cuda\.dir$' "$BUILD_DIR/CMakeFiles/TargetDirectories.txt" 2>/dev/null; }
if ! has_cuda; then
  say "WARNING: $BUILD_DIR has no CUDA backend (cr_cuda): the bundle will only skip on a GPU"
fi

# ---- stage -------------------------------------------------------------------------------------
STAGE=$OUT_DIR/stage/$NAME
rm -rf "$OUT_DIR/stage"
mkdir -p "$STAGE"/{bin,libexec,lib/openmpi,lib/pmix,share,etc,tests/cli,tests/dist,tests/gpu,bench/gpu,configs}
cp "$BUILD_DIR/bin/chainrule" "$BUILD_DIR/bin/test_gpu_ops" "$BUILD_DIR/bin/test_nccl" "$STAGE/bin/"
# Open MPI 4.1 (Debian): orterun is mpirun; orted starts ranks on other nodes (kept for
# completeness); their wrappers in bin/ set the relocation variables.
ORTERUN=$(readlink -f "$(command -v orterun)")
ORTED=$(readlink -f "$(command -v orted)")
cp "$ORTERUN" "$STAGE/libexec/orterun"
cp "$ORTED" "$STAGE/libexec/orted"
MPI_PKGLIB=$(ompi_info --path pkglibdir --parsable | sed -n 's/^path:pkglibdir://p')
MPI_PKGDATA=$(ompi_info --path pkgdatadir --parsable | sed -n 's/^path:pkgdatadir://p')
MPI_SYSCONF=$(ompi_info --path sysconfdir --parsable | sed -n 's/^path:sysconfdir://p')
# PMIx (Open MPI's process-management layer, Debian's libpmix2): its prefix holds lib/pmix
# (plugins) and share/pmix (help files).
PMIX_ROOT=$(dirname "$(dirname "$(readlink -f /usr/lib/x86_64-linux-gnu/libpmix.so.2)")")
cp "$MPI_PKGLIB"/*.so "$STAGE/lib/openmpi/"
if [[ -d $PMIX_ROOT/lib/pmix ]]; then cp "$PMIX_ROOT"/lib/pmix/*.so "$STAGE/lib/pmix/"; fi
cp -rL "$MPI_PKGDATA" "$STAGE/share/openmpi"
if [[ -d $PMIX_ROOT/share/pmix ]]; then cp -rL "$PMIX_ROOT/share/pmix" "$STAGE/share/pmix"; fi
cp -rL "$MPI_SYSCONF" "$STAGE/etc/openmpi"

# Plugins whose own dependencies are not on this machine (or are fabric drivers a one-node test
# never uses: InfiniBand, OFI, UCX, PSM) are left out: Open MPI then never tries to load them.
for p in "$STAGE"/lib/openmpi/*.so "$STAGE"/lib/pmix/*.so; do
  case $(basename "$p") in
    *ofi*|*ucx*|*openib*|*verbs*|*psm*|*portals*|*usnic*|*java*|*fcoll*|*_io_*|*fbtl*|*sharedfp*|*cuda*)
      rm -f "$p" ;;
    *) if ldd "$p" 2>/dev/null | grep -q 'not found'; then rm -f "$p"; fi ;;
  esac
done

# The ldd closure (ldd lists it whole, transitively): every library the binaries and plugins load, except glibc's own (the target
# has one, and mixing loaders breaks) and the CUDA libraries (taken from PyTorch's wheels there).
skip_lib() {
  case $1 in
    linux-vdso*|ld-linux*|libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|libresolv.so*|\
    libutil.so*|libanl.so*|libnsl.so*|libcrypt.so*) return 0 ;;
    libcuda.so*|libcudart*|libcublas*|libcudnn*|libnvrtc*|libnccl*|libnvJitLink*|libcufft*|\
    libcurand*|libcusparse*|libcusolver*|libnvToolsExt*|libcupti*) return 0 ;;
  esac
  return 1
}
collect() {
  ldd "$1" 2>/dev/null | awk '/=> \// {print $1, $3}' | while read -r soname path; do
    skip_lib "$soname" && continue
    [[ -e $STAGE/lib/$soname ]] && continue
    cp -L "$path" "$STAGE/lib/$soname"
    chmod u+w "$STAGE/lib/$soname"
  done
}
for f in "$STAGE"/bin/* "$STAGE"/libexec/* "$STAGE"/lib/openmpi/*.so "$STAGE"/lib/pmix/*.so; do
  collect "$f"
done
missing=$(for f in "$STAGE"/bin/* "$STAGE"/libexec/*; do ldd "$f" | grep 'not found' || true; done)
[[ -z $missing ]] || say "WARNING: unresolved here (CUDA libraries come from the GPU machine): $missing"

# RUNPATHs: binaries look in ../lib, libraries beside themselves, plugins one level up.
for f in "$STAGE"/bin/* "$STAGE"/libexec/*; do patchelf --set-rpath '$ORIGIN/../lib' "$f"; done
for f in "$STAGE"/lib/*.so*; do patchelf --set-rpath '$ORIGIN' "$f" 2>/dev/null || true; done
for f in "$STAGE"/lib/openmpi/*.so "$STAGE"/lib/pmix/*.so; do
  patchelf --set-rpath '$ORIGIN/..' "$f" 2>/dev/null || true
done

# mpirun / orterun / orted: relocate Open MPI and PMIx to the bundle (no system install needed).
for w in mpirun orterun orted; do
  target=orterun
  [[ $w == orted ]] && target=orted
  cat >"$STAGE/bin/$w" <<EOF
#!/bin/sh
# Open MPI relocated into this bundle: prefix, plugins, help files and MCA config.
B=\$(cd "\$(dirname "\$0")/.." && pwd)
export OPAL_PREFIX="\$B" OPAL_PKGDATADIR="\$B/share/openmpi" OPAL_SYSCONFDIR="\$B/etc/openmpi"
export OPAL_LIBDIR="\$B/lib" OPAL_PKGLIBDIR="\$B/lib/openmpi" OPAL_BINDIR="\$B/bin"
export OMPI_MCA_mca_base_component_path="\$B/lib/openmpi"
export PMIX_INSTALL_PREFIX="\$B" PMIX_MCA_mca_base_component_path="\$B/lib/pmix"
export PATH="\$B/bin:\${PATH:-/usr/bin:/bin}"
exec "\$B/libexec/$target" "\$@"
EOF
  chmod +x "$STAGE/bin/$w"
done

# Scripts, configs and the little data they read (the bundle root is their SOURCE_DIR).
cp "$SRC"/tests/cli/lib.sh "$SRC"/tests/cli/tiny.yaml "$SRC"/tests/cli/make_pairs.py "$STAGE/tests/cli/"
cp "$SRC"/tests/dist/{lib.sh,compare_runs.py,dist.yaml,dist_llama.yaml} "$STAGE/tests/dist/"
cp "$SRC"/tests/gpu/{lib.sh,gaps.py,smoke.sh,parity.sh,masked.sh,smoke_gpt2.yaml,smoke_llama.yaml,README.md} "$STAGE/tests/gpu/"
cp "$SRC"/tests/gpu/device_check.sh "$STAGE/"
cp "$SRC"/bench/gpu/*.py "$STAGE/bench/gpu/"
cp "$SRC"/configs/*.yaml "$STAGE/configs/"
glibc_need=$(objdump -T "$STAGE"/bin/chainrule "$STAGE"/bin/test_gpu_ops "$STAGE"/bin/test_nccl "$STAGE"/libexec/* "$STAGE"/lib/*.so* 2>/dev/null |
  grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
{
  echo "chainrule GPU bundle"
  echo "built: $(date -u +%FT%TZ) on $(. /etc/os-release && echo "$PRETTY_NAME"), from $SRC"
  echo "commit: $(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$SRC" diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
  echo "cuda backend: $(has_cuda && echo yes || echo no)"
  echo "needs glibc >= ${glibc_need#GLIBC_}"
} >"$STAGE/BUNDLE_INFO"

mkdir -p "$OUT_DIR"
say "compressing $(du -sh "$STAGE" | cut -f1) ..."
tar -C "$OUT_DIR/stage" -cf - "$NAME" | xz -T2 -9 >"$ARCHIVE.tmp"
mv "$ARCHIVE.tmp" "$ARCHIVE"
cp "$SRC/tests/gpu/device_check.sh" "$OUT_DIR/"  # carried beside the archive (also inside it)
size=$(stat -c %s "$ARCHIVE")
say "$ARCHIVE: $((size / 1024)) KiB ($(ls "$STAGE/lib" | wc -l) libraries; needs ${glibc_need})"
[[ $size -lt $LIMIT ]] || die "the bundle is $size bytes, over the 64 MiB limit"
rm -rf "$OUT_DIR/stage"
[[ $check -eq 1 ]] || exit 0

# ---- proof: unpack and run under env -i, the system's Open MPI hidden ---------------------------
CHECK=$(mktemp -d "${TMPDIR:-/tmp}/chainrule-bundle-check.XXXXXX")
trap 'rm -rf "$CHECK"' EXIT
tar -C "$CHECK" -xJf "$ARCHIVE"
cat >"$CHECK/check.sh" <<'EOF'
#!/bin/bash
# Runs inside the clean environment: every command gets env -i (plus what it names).
set -euo pipefail
B=$1
ok() { echo "bundle check: ok: $*"; }
E=(env -i HOME="$2" TMPDIR="$2")
cd "$2"
"${E[@]}" "$B/bin/chainrule" --help >/dev/null && ok "chainrule --help"
printf 'the cat sat on the mat.\na dog ran in the park.\n%.0s' $(seq 400) >corpus.txt
"${E[@]}" "$B/bin/chainrule" prepare --input corpus.txt --tokenizer char --out data >/dev/null
ok "chainrule prepare"
"${E[@]}" OMP_NUM_THREADS=1 "$B/bin/chainrule" train "$B/tests/cli/tiny.yaml" \
  --set train.max_steps=2 --set run.eval_every=0 --set run.dir=run1 >train1.log 2>&1 || { cat train1.log; exit 1; }
grep -q '"type":"train"' run1/metrics.jsonl && ok "a CPU training run (2 steps)"
"${E[@]}" OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 \
  "$B/bin/mpirun" -np 2 --bind-to none -x OMP_NUM_THREADS=1 "$B/bin/chainrule" train "$B/tests/cli/tiny.yaml" \
  --set train.max_steps=2 --set run.eval_every=0 --set run.dir=run2 --set parallel.tensor=2 >train2.log 2>&1 \
  || { cat train2.log; exit 1; }
grep -q '"type":"train"' run2/metrics.jsonl && ok "mpirun -np 2, tp 2, CPU (2 steps)"
rc=0
"${E[@]}" "$B/bin/test_gpu_ops" || rc=$?
[[ $rc -eq 77 ]] || { echo "test_gpu_ops exited $rc, expected 77 (skipped: no GPU)"; exit 1; }
ok "test_gpu_ops exits 77 (no GPU)"
rc=0
"${E[@]}" "$B/bin/test_nccl" || rc=$?
[[ $rc -eq 77 ]] || { echo "test_nccl exited $rc, expected 77 (skipped: no GPU)"; exit 1; }
ok "test_nccl exits 77 (no GPU)"
rc=0
"${E[@]}" PATH=/usr/bin:/bin "$B/device_check.sh" --unpacked "$B" >device_check.log 2>&1 || rc=$?
tail -n 30 device_check.log
[[ $rc -eq 0 ]] && grep -q 'no GPU' device_check.log || { echo "device_check.sh dry run: exit $rc"; exit 1; }
ok "device_check.sh dry run: every step skipped, exit 0"
EOF
chmod +x "$CHECK/check.sh"
mkdir -p "$CHECK/work" "$CHECK/empty"
hide=(/usr/lib/x86_64-linux-gnu/openmpi /usr/share/openmpi /etc/openmpi /usr/lib/x86_64-linux-gnu/pmix2)
if unshare -m true 2>/dev/null; then
  mounts=""
  for d in "${hide[@]}"; do [[ -d $d ]] && mounts+="mount --bind $CHECK/empty $d; "; done
  # Also hide the system's libmpi & co. behind /usr/lib/x86_64-linux-gnu: the loader must take
  # them from the bundle's lib/.
  say "checking under env -i with the system Open MPI hidden (unshare -m)"
  unshare -m bash -c "set -e; $mounts ls /usr/lib/x86_64-linux-gnu/openmpi | wc -l | grep -qx 0; \
    bash '$CHECK/check.sh' '$CHECK/$NAME' '$CHECK/work'"
else
  say "WARNING: unshare -m is not permitted here: checking under env -i with the system Open MPI visible"
  bash "$CHECK/check.sh" "$CHECK/$NAME" "$CHECK/work"
fi
# Which libraries do the bundled binaries load? Every one but glibc's and the CUDA libraries (the
# GPU machine's) must come from the bundle.
leaks=$(for b in chainrule test_gpu_ops test_nccl; do
  env -i LD_TRACE_LOADED_OBJECTS=1 "$CHECK/$NAME/bin/$b" 2>/dev/null | awk '/=> \// {print $1, $3}'
done | while read -r soname path; do
  skip_lib "$soname" || [[ $path == "$CHECK/$NAME/"* ]] || echo "$path"
done | sort -u)
[[ -z $leaks ]] || die "the bundled binaries load libraries from outside the bundle: $leaks"
say "PASS: $ARCHIVE ($((size / 1024)) KiB) runs from a clean environment up to the GPU"
