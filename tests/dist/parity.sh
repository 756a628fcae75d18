#!/usr/bin/env bash
# Distributed equals single-rank: the parity model trained 20 steps at each (tp, dp) layout under
# mpirun must match the 1-rank run step by step, in the gathered final weights and in the whole
# model's per-layer parameter and gradient norms (metrics.jsonl "norms" lines, within LOSS_TOL;
# not in bf16, whose gradients carry bf16 rounding: 4.3e-3 relative at tp 2).
# Layout 2,2 also runs with parallel.zero 1 (gradients reduce-scattered: the norms sum each
# rank's parts), without DIST_SETS or DIST_PAIRS.
# Usage: parity.sh CHAINRULE SRC_DIR LOSS_TOL WEIGHT_TOL LAYOUT...   (LAYOUT = tp,dp)
# DIST_PAIRS=1 runs the same on masked data (below). With CR_TEST_DROP_COLLECTIVE set (the negative control) every layout must FAIL instead, by a
# loss or weight gap at least 100x its tolerance.
set -euo pipefail
BIN=$1 SRC=$2 LOSS_TOL=$3 WEIGHT_TOL=$4
shift 4
source "$(dirname "$0")/lib.sh"
dist_init "$BIN" "$SRC" 4000
CFG="$SRC/tests/dist/${DIST_CONFIG:-dist.yaml}"  # DIST_CONFIG: another model (dist_llama.yaml)
# DIST_SETS: extra overrides for every run, e.g. "train.dtype=bf16 train.device=cuda".
SETS=()
for kv in ${DIST_SETS:-}; do SETS+=(--set "$kv"); done

# DIST_PAIRS=1: prompt->completion data with a loss mask (prepare --format pairs), trained with
# a document mask and prefix-LM: every rank's micro-batches count different numbers of targets.
if [[ -n ${DIST_PAIRS:-} ]]; then
  "$PY" "$SRC/tests/cli/make_pairs.py" pairs.jsonl 1500 7
  "$BIN" prepare --input pairs.jsonl --format pairs --prompt-field prompt --completion-field completion \
    --tokenizer char --out data_pairs >/dev/null
  SETS+=(--set data.dir=data_pairs --set data.document_mask=true --set model.prefix_lm=true)
fi

drop=${CR_TEST_DROP_COLLECTIVE:-}
( unset CR_TEST_DROP_COLLECTIVE; "$BIN" train "$CFG" "${SETS[@]}" --set run.dir=ref >ref.log 2>&1 ) || { cat ref.log; fail "1-rank run failed"; }
if [[ -n ${DIST_PAIRS:-} && -z $drop ]]; then
  # The mean over counted targets does not depend on how the global batch is cut: one micro-batch
  # of 8 sequences equals 8 of 1 (a mean of micro-batch means would not: their counts differ).
  "$BIN" train "$CFG" "${SETS[@]}" --set run.dir=ref_mb8 --set train.micro_batch=8 >ref_mb8.log 2>&1 \
    || { cat ref_mb8.log; fail "1-rank run with micro_batch 8 failed"; }
  "$PY" "$SRC/tests/dist/compare_runs.py" ref ref_mb8 "$LOSS_TOL" "$WEIGHT_TOL" \
    || fail "micro_batch 8 does not match micro_batch 1: the loss is not the mean over counted targets"
fi
NORMS=(--norms "$LOSS_TOL")
[[ ${DIST_SETS:-} != *bf16* ]] || NORMS=()
# check_layout TP DP NAME [--set K=V ...]: trains NAME at (tp, dp) and compares it with ref.
check_layout() {
  local tp=$1 dp=$2 name=$3
  shift 3
  local np=$((tp * dp)) start
  start=$(date +%s%N)
  mpirun -np "$np" --bind-to none -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS -x CR_TEST_DROP_COLLECTIVE \
    "$BIN" train "$CFG" "${SETS[@]}" --set run.dir="$name" --set parallel.tensor="$tp" "$@" >"$name.log" 2>&1 \
    || { cat "$name.log"; fail "layout tp=$tp dp=$dp $*: the run failed"; }
  note "layout tp=$tp dp=$dp $* ($np ranks, $(( ($(date +%s%N) - start) / 1000000 )) ms)"
  "$PY" "$SRC/tests/dist/compare_runs.py" ref "$name" "$LOSS_TOL" "$WEIGHT_TOL" "${NORMS[@]}" \
    || fail "layout tp=$tp dp=$dp $* does not match the 1-rank run"
}
for layout in "$@"; do
  tp=${layout%,*} dp=${layout#*,}
  if [ -z "$drop" ]; then
    check_layout "$tp" "$dp" "run_$tp$dp"
    # ZeRO-1 too, in the plain variants (the data-parallel options have tests/dist/zero.sh).
    if [[ $tp,$dp == 2,2 && -z ${DIST_SETS:-}${DIST_PAIRS:-} ]]; then
      check_layout 2 2 run_22_zero1 --set parallel.zero=1
    fi
  else
    np=$((tp * dp))
    mpirun -np "$np" --bind-to none -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS -x CR_TEST_DROP_COLLECTIVE \
      "$BIN" train "$CFG" "${SETS[@]}" --set run.dir="run_$tp$dp" --set parallel.tensor="$tp" >"run_$tp$dp.log" 2>&1 \
      || { cat "run_$tp$dp.log"; fail "layout tp=$tp dp=$dp: the run failed"; }
    out=$("$PY" "$SRC/tests/dist/compare_runs.py" ref "run_$tp$dp" "$LOSS_TOL" "$WEIGHT_TOL" || true)
    echo "$out"
    echo "$out" | grep -q '^FAIL' || fail "dropping '$drop' went unnoticed at tp=$tp dp=$dp"
    lgap=$(echo "$out" | sed -n 's/^max loss gap \([^ ]*\).*/\1/p')
    wgap=$(echo "$out" | sed -n 's/.*max weight gap \([^ ]*\) in.*/\1/p')
    "$PY" -c "import sys; sys.exit(0 if max($lgap / $LOSS_TOL, $wgap / $WEIGHT_TOL) >= 100 else 1)" \
      || fail "negative control: gaps $lgap (loss) and $wgap (weights) are not 100x the tolerances"
  fi
done
echo "parity: all layouts checked"
