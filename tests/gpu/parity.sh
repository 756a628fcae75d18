#!/usr/bin/env bash
# Distributed equals single-rank, on one GPU: the parity models of tests/dist (dist.yaml, gpt2;
# dist_llama.yaml, llama with grouped-query attention) trained 20 steps in fp32 on the GPU by
# 1 rank and by 2 or 4 ranks sharing that GPU (train.device: cuda; each rank picks GPU
# local_rank % count), at each (tp, dp) layout; every step's loss and the gathered final
# weights must match the 1-rank run. The TP and DP collectives stage device buffers through
# host memory over MPI, so this covers the device <-> host paths of the communicators. Local
# ranks inherit LD_LIBRARY_PATH (the CUDA libraries) from mpirun.
# Usage: parity.sh CHAINRULE SOURCE_DIR LOSS_TOL WEIGHT_TOL LAYOUT...   (LAYOUT = tp,dp)
# The gate is tests/dist/compare_runs.py where numpy is importable, else gaps.py (the same
# measures); a GAP line per layout is printed either way. Exit 77 without a GPU.
set -euo pipefail
BIN=$1 SRC_ARG=$2 LOSS_TOL=$3 WEIGHT_TOL=$4
shift 4
source "$(dirname "$0")/lib.sh"
gpu_init "$BIN" "$SRC_ARG" 4000
has_numpy=0
"$PY" -c "import numpy" 2>/dev/null && has_numpy=1

status=0
for model in dist dist_llama; do
  cfg=$SRC/tests/dist/$model.yaml
  gpu=(--set train.device=cuda --set train.dtype=fp32)
  "$BIN" train "$cfg" --set run.dir="${model}_ref" "${gpu[@]}" >"${model}_ref.log" 2>&1 \
    || { cat "${model}_ref.log"; fail "$model: the 1-rank GPU run failed"; }
  for layout in "$@"; do
    tp=${layout%,*} dp=${layout#*,}
    np=$((tp * dp)) dir=${model}_$tp$dp
    start=$(date +%s%N)
    mpirun -np "$np" --bind-to none -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS \
      "$BIN" train "$cfg" --set run.dir="$dir" --set parallel.tensor="$tp" "${gpu[@]}" \
      >"$dir.log" 2>&1 || { cat "$dir.log"; fail "$model tp=$tp dp=$dp: the run failed"; }
    note "$model tp=$tp dp=$dp ($np ranks on one GPU, $(( ($(date +%s%N) - start) / 1000000 )) ms)"
    "$PY" "$GAPS" "${model}_ref" "$dir" "$LOSS_TOL" "$WEIGHT_TOL" "parity.$model.tp$tp.dp$dp" || {
      [[ $has_numpy -eq 1 ]] || status=1; }
    if [[ $has_numpy -eq 1 ]]; then
      "$PY" "$SRC/tests/dist/compare_runs.py" "${model}_ref" "$dir" "$LOSS_TOL" "$WEIGHT_TOL" || status=1
    fi
  done
done
[[ $status -eq 0 ]] || fail "a layout does not match the 1-rank GPU run"
echo "parity: all layouts match on the GPU"
