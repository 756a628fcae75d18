#!/usr/bin/env bash
# bench/gemm/run.sh: build the GEMM engine benchmarks (if needed) and print one GFLOP/s table.
#
#   bash bench/gemm/run.sh                 # everything: ~25 min on 2 cores (quiet machine)
#   QUICK=1 bash bench/gemm/run.sh         # B=4,T=64 shapes only, one pass: ~2 min
#   CONDITIONS="ob-env dnnl-sgemm" bash bench/gemm/run.sh
#
# Conditions (each its own process, since OpenBLAS/BLIS read their env vars when they load):
#   ob-env       OpenBLAS (OpenMP build), environment as found (here OPENBLAS_CORETYPE=Haswell)
#   ob-auto      OpenBLAS with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (its own detection)
#   ob-skx       OpenBLAS forced to OPENBLAS_CORETYPE=SkylakeX (AVX-512); not in the default list
#   blis-auto    BLIS (OpenMP), its own runtime arch selection (B=4,T=64 shapes only: on an
#                unrecognised CPU it falls back to 'generic', too slow for the B=8,T=256 step)
#   blis-skx     BLIS forced to its AVX-512 'skx' kernels (BLIS_ARCH_TYPE=0, an arch_t index)
#   blis-zen3    BLIS forced to 'zen3' (AVX2) (BLIS_ARCH_TYPE=6); not in the default list
#   dnnl-sgemm   oneDNN dnnl_sgemm
#   dnnl-matmul  oneDNN matmul primitive (cached per shape)
# Environment knobs: BUILD_DIR (default /tmp/gemmbuild), OUT_DIR (default /tmp/gemmbench),
# PASSES (default 2: every condition is measured twice, interleaved, the better counts),
# OMP_NUM_THREADS (default 2), THREADS_CHECK (default 1: also run --threads-check),
# MERGE (results.tsv files of earlier runs to fold into the table as extra passes).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BUILD_DIR="${BUILD_DIR:-/tmp/gemmbuild}"
OUT_DIR="${OUT_DIR:-/tmp/gemmbench}"
PASSES="${PASSES:-2}"
QUICK="${QUICK:-0}"
THREADS_CHECK="${THREADS_CHECK:-1}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
CONDITIONS="${CONDITIONS:-ob-env ob-auto blis-auto blis-skx dnnl-sgemm dnnl-matmul}"
if [[ "$QUICK" == 1 ]]; then PASSES="${PASSES_QUICK:-1}"; fi

cmake -S "$here" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j2 >/dev/null
bin="$BUILD_DIR/bin"
mkdir -p "$OUT_DIR"
tsv="$OUT_DIR/results.tsv"
log="$OUT_DIR/log.txt"
: >"$tsv"
: >"$log"

# Waits (up to 60 s) until other processes use under 10% of the CPUs over one second.
wait_quiet() {
  local i busy
  for ((i = 0; i < 60; i++)); do
    busy=$(awk 'NR==1{b1=$2+$3+$4+$7+$8+$9; t1=b1+$5+$6} NR==2{b2=$2+$3+$4+$7+$8+$9; t2=b2+$5+$6}
                END{printf "%d", (t2>t1) ? 100*(b2-b1)/(t2-t1) : 0}' \
             <(head -1 /proc/stat; sleep 1; head -1 /proc/stat | sed 's/^/x/' ) 2>/dev/null || echo 0)
    [[ "$busy" -lt 10 ]] && return 0
  done
  echo "   (machine still busy: ${busy}% CPU used by others; measuring anyway)" | tee -a "$log"
}

# cond -> the command line for it (binary, environment, flags).
cmd_for() {
  local q=""
  [[ "$QUICK" == 1 ]] && q="--quick"
  case "$1" in
    ob-env) echo "env $bin/gemm_bench_openblas --label ob-env $q" ;;
    ob-auto) echo "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $bin/gemm_bench_openblas --label ob-auto $q" ;;
    ob-skx) echo "env -u OPENBLAS_L2_SIZE OPENBLAS_CORETYPE=SkylakeX $bin/gemm_bench_openblas --label ob-skx $q" ;;
    blis-auto) echo "env -u BLIS_ARCH_TYPE $bin/gemm_bench_blis --label blis-auto --quick" ;;
    blis-skx) echo "env BLIS_ARCH_TYPE=0 $bin/gemm_bench_blis --label blis-skx $q" ;;
    blis-zen3) echo "env BLIS_ARCH_TYPE=6 $bin/gemm_bench_blis --label blis-zen3 $q" ;;
    dnnl-sgemm) echo "env $bin/gemm_bench_dnnl --engine dnnl_sgemm --label dnnl-sgemm $q" ;;
    dnnl-matmul) echo "env $bin/gemm_bench_dnnl --engine dnnl_matmul --label dnnl-matmul $q" ;;
    *) echo "unknown condition $1" >&2; return 1 ;;
  esac
}

have_bin() {
  case "$1" in
    ob-*) [[ -x "$bin/gemm_bench_openblas" ]] ;;
    blis-*) [[ -x "$bin/gemm_bench_blis" ]] ;;
    dnnl-*) [[ -x "$bin/gemm_bench_dnnl" ]] ;;
  esac
}

echo "chainrule GEMM engine benchmark: OMP_NUM_THREADS=$OMP_NUM_THREADS," \
     "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)} OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE:-(unset)};" \
     "$PASSES pass(es); log: $log" | tee -a "$log"
run_conds=()
for c in $CONDITIONS; do
  if have_bin "$c"; then run_conds+=("$c"); else echo "skipping $c: its library was not found at configure time" | tee -a "$log"; fi
done

for ((p = 1; p <= PASSES; p++)); do
  for c in "${run_conds[@]}"; do
    wait_quiet
    echo "-- pass $p: $c" | tee -a "$log"
    part="$OUT_DIR/part.tsv"
    : >"$part"
    # shellcheck disable=SC2046
    if ! $(cmd_for "$c") --tsv "$part" >>"$log" 2>&1; then
      echo "   $c FAILED (see $log)" | tee -a "$log"
    fi
    sed "s/^/$p\t/" "$part" >>"$tsv"
  done
done
rm -f "$OUT_DIR/part.tsv"

echo
echo "Engines (what each condition dispatched to):"
grep -A1 -E '^== ' "$log" | grep -v -- '^--$' | awk '!seen[$0]++'
grep -E 'FAIL|gives wrong' "$log" || true
echo
# shellcheck disable=SC2086
python3 "$here/summarize.py" "$tsv" ${MERGE:-} "${run_conds[@]}"

if [[ "$THREADS_CHECK" == 1 ]]; then
  echo
  echo "Threading checks (--threads-check; OMP_NUM_THREADS=1, then unset):"
  for c in "${run_conds[@]}"; do
    [[ "$c" == blis-auto ]] && continue  # generic kernels: nothing to learn about threading
    for n in 1 unset; do
      echo "-- $c, OMP_NUM_THREADS=$n"
      if [[ "$n" == unset ]]; then
        env -u OMP_NUM_THREADS $(cmd_for "$c" | sed 's/--quick//') --threads-check --min-time 0.3 2>&1 | grep -E '^\[|FAIL|OMP_NUM' | sed 's/^/   /'
      else
        OMP_NUM_THREADS=$n $(cmd_for "$c" | sed 's/--quick//') --threads-check --min-time 0.3 2>&1 | grep -E '^\[|FAIL|OMP_NUM' | sed 's/^/   /'
      fi
    done
  done
fi
