#!/usr/bin/env bash
# Resharding: a checkpoint saved at (tp 2, dp 2) loads into (1,1), (4,1) and (1,4), AdamW state
# included. The next step's loss must equal that of continuing at (2,2) within LOSS_TOL, and the
# gathered weights after it (`ckpt export`) must agree within WEIGHT_TOL (compare_runs.py).
# Usage: ckpt_reshard.sh CHAINRULE SRC_DIR LOSS_TOL WEIGHT_TOL LAYOUT...
set -euo pipefail
source "$(dirname "$0")/ckpt_lib.sh"
ckpt_init "$1" "$2"
LOSS_TOL=$3 WEIGHT_TOL=$4
shift 4
COMMON=(--set train.max_steps=40)

# Save at (2,2) after step 20, then continue there for one step: the reference.
train_layout 2 2 save.log "${COMMON[@]}" --set train.stop_after_step=20 --set checkpoint.dir=ck22 \
  --set run.dir=run22 || { cat save.log; fail "saving at (2,2) failed"; }
[[ -d ck22/step_00000020 ]] || fail "no checkpoint of step 20: $(ls ck22)"
grep -q "saved at tensor 2 x data 2" <("$BIN" ckpt inspect ck22) || fail "ckpt inspect: wrong layout"
cp -r ck22 ck_orig
train_layout 2 2 ref.log "${COMMON[@]}" --set train.stop_after_step=21 --set checkpoint.dir=ck22 \
  --set run.dir=ref || { cat ref.log; fail "continuing at (2,2) failed"; }
"$BIN" ckpt export ck22 --out ref >/dev/null  # the step-21 weights, gathered, for compare_runs.py

for layout in "$@"; do
  tp=${layout%,*} dp=${layout#*,}
  rm -rf "ck$tp$dp" && cp -r ck_orig "ck$tp$dp"
  train_layout "$tp" "$dp" "load$tp$dp.log" "${COMMON[@]}" --set train.stop_after_step=21 \
    --set checkpoint.dir="ck$tp$dp" --set run.dir="run$tp$dp" ||
    { cat "load$tp$dp.log"; fail "loading the (2,2) checkpoint at tp=$tp dp=$dp failed"; }
  grep -q "resumed at step 20" "load$tp$dp.log" || fail "tp=$tp dp=$dp did not resume at step 20"
  "$BIN" ckpt export "ck$tp$dp" --out "run$tp$dp" >/dev/null
  "$PY" "$SRC/tests/dist/compare_runs.py" ref "run$tp$dp" "$LOSS_TOL" "$WEIGHT_TOL" --steps 21 ||
    fail "tp=$tp dp=$dp after loading the (2,2) checkpoint does not match continuing at (2,2)"
  note "(2,2) -> tp=$tp dp=$dp: step 21 matches"
done

echo "ckpt_reshard: ok"
