#!/usr/bin/env bash
# bench/cpu/run.sh: the end-to-end CPU training benchmark, chainrule against PyTorch, in one run.
#
#   bash bench/cpu/run.sh                      # all configs (~6 min on 2 cores)
#   CONFIGS="gpt2-124m:8:256" bash bench/cpu/run.sh
#
# For each configuration (name:B:T) it runs, each in its own process:
#   chainrule   build/bin/train_bench, environment as found and with OPENBLAS_CORETYPE /
#               OPENBLAS_L2_SIZE unset (users' machines do not force OpenBLAS's AVX2 kernel)
#   pytorch     bench/cpu/torch_gpt2_bench.py (Debian's python3-torch), the same two conditions
#               plus its best one: unset + OMP_WAIT_POLICY=passive
# and prints one table: tokens/s, ms per step (forward / backward / optimizer), model GFLOP/s,
# MFU against the sgemm ceiling chainrule measured in that condition (the GEMMs of the same
# step through its GEMM engine), peak RSS, and tokens/s as a ratio to PyTorch's best condition.
# Threads: OMP_NUM_THREADS (default: all cores). Raw JSON lines go to $OUT (default
# build/bench-cpu.jsonl). Benchmarks are not tests: nothing here fails on a slow result.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
BUILD=${BUILD:-$root/build}
OUT=${OUT:-$BUILD/bench-cpu.jsonl}
CONFIGS=${CONFIGS:-"gpt2-124m:8:256 gpt2-124m:4:64 char:16:256"}
STEPS=${STEPS:-3}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}

[[ -x $BUILD/bin/train_bench ]] || cmake --build "$BUILD" --target train_bench -j "$(nproc)"
: >"$OUT"

# run LABEL CONDITION CMD...: one measurement; its JSON line gets the labels added.
run() {
  local engine=$1 cond=$2
  shift 2
  local env_args=()
  case $cond in
    found) ;;
    unset) env_args=(-u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE) ;;
    unset+passive) env_args=(-u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_WAIT_POLICY=passive) ;;
  esac
  echo "-- $engine ($cond): $*" >&2
  local line
  line=$(env "${env_args[@]}" "$@" 2>>"$OUT.log" | tail -n 1)
  /usr/bin/python3 -c 'import json,sys; j=json.loads(sys.argv[1]); j["condition"]=sys.argv[2]; print(json.dumps(j))' \
    "$line" "$cond" >>"$OUT"
}

for c in $CONFIGS; do
  IFS=: read -r name B T <<<"$c"
  for cond in found unset; do
    run chainrule "$cond" "$BUILD/bin/train_bench" --config "$name" -B "$B" -T "$T" --steps "$STEPS"
  done
  for cond in found unset unset+passive; do
    run pytorch "$cond" /usr/bin/python3 "$here/torch_gpt2_bench.py" --config "$name" -B "$B" -T "$T" \
      --steps "$STEPS" --no-probe
  done
done
/usr/bin/python3 "$here/summarize.py" "$OUT"
