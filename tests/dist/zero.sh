#!/usr/bin/env bash
# The data-parallel options against the plain path, on the parity model cut into several
# gradient buckets (parallel.bucket_mb 0.03: about one bucket per layer):
#   1. parallel.overlap true vs false: bit-identical losses and final weights, zero 0 and 1;
#   2. parallel.zero 1 vs 0 at each LAYOUT: losses within LOSS_TOL at every step, final weights
#      within WEIGHT_TOL (compare_runs.py);
#   3. the negative control: zero 1 with one bucket's reduce-scatter skipped (that bucket's
#      gradients stay local) must miss by at least 100x a tolerance;
#   4. checkpoints: zero 1 at (1,4) saved at step 20 resumes bit-exactly there, and loads at
#      (2,2) zero 0 and (1,2) zero 1, whose step 21 matches continuing at (1,4) within the
#      tolerances.
# Usage: zero.sh CHAINRULE SRC_DIR LOSS_TOL WEIGHT_TOL LAYOUT...   (LAYOUT = tp,dp)
set -euo pipefail
source "$(dirname "$0")/ckpt_lib.sh"
ckpt_init "$1" "$2"
LOSS_TOL=$3 WEIGHT_TOL=$4
shift 4
BUCKETS=(--set parallel.bucket_mb=0.03)

# run NAME TP DP [--set K=V ...]
run() {
  local name=$1 tp=$2 dp=$3
  shift 3
  local t0=$(date +%s%N)
  train_layout "$tp" "$dp" "$name.log" "${BUCKETS[@]}" --set run.dir="$name" "$@" ||
    { cat "$name.log"; fail "$name (tp=$tp dp=$dp $*) failed"; }
  note "$name: tp=$tp dp=$dp $* ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"
}
same_run() {  # bit for bit: every logged loss and the exported weights
  diff <(grep -o '"loss":[^,]*' "$1/metrics.jsonl") <(grep -o '"loss":[^,]*' "$2/metrics.jsonl") >/dev/null ||
    fail "$1 and $2: the losses differ"
  cmp -s "$1/model.safetensors" "$2/model.safetensors" || fail "$1 and $2: the final weights differ"
}

# ---- 1. overlap on vs off -----------------------------------------------------------------
for z in 0 1; do
  run ov_on_z$z 2 2 --set parallel.zero=$z --set parallel.overlap=true
  run ov_off_z$z 2 2 --set parallel.zero=$z --set parallel.overlap=false
  same_run ov_on_z$z ov_off_z$z
  grep -q "overlapped with backward" ov_on_z$z.log || fail "overlap on: no communication thread reported"
  note "overlap on = off, bit for bit (tp 2, dp 2, zero $z)"
done

# ---- 2. zero 1 vs zero 0 --------------------------------------------------------------------
for layout in "$@"; do
  tp=${layout%,*} dp=${layout#*,}
  if [[ "$tp,$dp" == "2,2" ]]; then z0=ov_on_z0 z1=ov_on_z1; else
    z0=z0_$tp$dp z1=z1_$tp$dp
    run $z0 "$tp" "$dp" --set parallel.zero=0
    run $z1 "$tp" "$dp" --set parallel.zero=1
  fi
  grep -q "ZeRO-1: this rank updates" $z1.log || fail "$z1: no ZeRO-1 line"
  "$PY" "$SRC/tests/dist/compare_runs.py" $z0 $z1 "$LOSS_TOL" "$WEIGHT_TOL" ||
    fail "zero 1 does not match zero 0 at tp=$tp dp=$dp"
done

# ---- 3. negative control: one reduce-scatter dropped ------------------------------------------
CR_TEST_DROP_COLLECTIVE="grad.bucket 2/" run neg 1 2 --set parallel.zero=1
[[ ! -d z0_12 ]] && run z0_12 1 2 --set parallel.zero=0
out=$("$PY" "$SRC/tests/dist/compare_runs.py" z0_12 neg "$LOSS_TOL" "$WEIGHT_TOL" || true)
echo "$out" | tail -3
echo "$out" | grep -q '^FAIL' || fail "dropping a reduce-scatter went unnoticed"
lgap=$(echo "$out" | sed -n 's/^max loss gap \([^ ]*\).*/\1/p')
wgap=$(echo "$out" | sed -n 's/.*max weight gap \([^ ]*\) in.*/\1/p')
"$PY" -c "import sys; sys.exit(0 if max($lgap / $LOSS_TOL, $wgap / $WEIGHT_TOL) >= 100 else 1)" ||
  fail "negative control: gaps $lgap (loss) and $wgap (weights) are not 100x the tolerances"
note "negative control: loss gap $lgap, weight gap $wgap"

# ---- 4. checkpoints ---------------------------------------------------------------------------
COMMON=(--set train.max_steps=40 --set parallel.zero=1)
run full14 1 4 "${COMMON[@]}" --set train.stop_after_step=22 --set checkpoint.dir=ckfull
run save14 1 4 "${COMMON[@]}" --set train.stop_after_step=20 --set checkpoint.dir=ck14
cp -r ck14 ck_orig
grep -q "saved at tensor 1 x data 4 (4 ranks), ZeRO-1 optimizer parts" <("$BIN" ckpt inspect ck14) ||
  fail "ckpt inspect does not report the ZeRO-1 layout"
run res14 1 4 "${COMMON[@]}" --set train.stop_after_step=22 --set checkpoint.dir=ck14
grep -q "resumed at step 20" res14.log || fail "(1,4) zero 1 did not resume at step 20"
[[ "$(losses res14 21 22)" == "$(losses full14 21 22)" ]] ||
  fail "zero 1 at (1,4): resumed steps 21-22 differ from the uninterrupted run"
note "zero 1 (1,4): resume bit-exact"
rm -rf ck14 && cp -r ck_orig ck14
run ref14 1 4 "${COMMON[@]}" --set train.stop_after_step=21 --set checkpoint.dir=ck14
"$BIN" ckpt export ck14 --out ref14 >/dev/null
for target in "2 2 0" "1 2 1"; do
  read -r tp dp z <<<"$target"
  rm -rf "ck$tp$dp" && cp -r ck_orig "ck$tp$dp"
  run load$tp$dp "$tp" "$dp" --set train.max_steps=40 --set parallel.zero=$z \
    --set train.stop_after_step=21 --set checkpoint.dir="ck$tp$dp"
  grep -q "resumed at step 20" load$tp$dp.log || fail "tp=$tp dp=$dp did not resume at step 20"
  "$BIN" ckpt export "ck$tp$dp" --out load$tp$dp >/dev/null
  "$PY" "$SRC/tests/dist/compare_runs.py" ref14 load$tp$dp "$LOSS_TOL" "$WEIGHT_TOL" --steps 21 ||
    fail "the (1,4) zero-1 checkpoint at tp=$tp dp=$dp zero $z does not continue the curve"
  note "(1,4) zero 1 -> tp=$tp dp=$dp zero $z: step 21 matches"
done
echo "zero: ok"
