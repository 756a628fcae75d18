#!/usr/bin/env bash
# Bit-exact resume. For each layout (tp,dp): train 40 steps saving every 10; separately, train
# again, SIGKILL the job after a random step in 21..29 (on a random rank), and resume with the
# same command. Steps 21..40 must be bit-identical to the uninterrupted run, and so must the
# final weights. Then `launch --max-restarts` does the restart itself. Every run compared has the
# same threads per rank (OMP_NUM_THREADS=1, set by dist_init): that is what bit-identity covers.
# Usage: ckpt_resume.sh CHAINRULE SRC_DIR LAYOUT...   (LAYOUT = tp,dp)
set -euo pipefail
source "$(dirname "$0")/ckpt_lib.sh"
ckpt_init "$1" "$2"
shift 2
SEED=${CR_TEST_SEED:-$RANDOM}
RANDOM=$SEED
note "random seed $SEED (set CR_TEST_SEED to repeat)"
COMMON=(--set train.max_steps=40 --set checkpoint.every=10)

for layout in "$@"; do
  tp=${layout%,*} dp=${layout#*,} np=$((${layout%,*} * ${layout#*,}))
  tag="tp=$tp dp=$dp"
  train_layout "$tp" "$dp" "base$tp$dp.log" "${COMMON[@]}" --set run.dir="base$tp$dp" \
    --set checkpoint.dir="ckb$tp$dp" || { cat "base$tp$dp.log"; fail "$tag: the uninterrupted run failed"; }

  kill_step=$((21 + RANDOM % 9)) kill_rank=$((RANDOM % np))
  rc=0
  CR_TEST_KILL_AT_STEP=$kill_step CR_TEST_KILL_RANK=$kill_rank \
    train_layout "$tp" "$dp" "killed$tp$dp.log" "${COMMON[@]}" --set run.dir="run$tp$dp" \
    --set checkpoint.dir="ck$tp$dp" || rc=$?
  [[ $rc -ne 0 ]] || fail "$tag: the run survived the kill after step $kill_step"
  [[ -d ck$tp$dp/step_00000020 && ! -d ck$tp$dp/step_00000030 ]] ||
    fail "$tag: expected step 20 to be the latest checkpoint after the kill: $(ls "ck$tp$dp")"
  train_layout "$tp" "$dp" "resumed$tp$dp.log" "${COMMON[@]}" --set run.dir="run$tp$dp" \
    --set checkpoint.dir="ck$tp$dp" || { cat "resumed$tp$dp.log"; fail "$tag: the resumed run failed"; }
  grep -q "resumed at step 20" "resumed$tp$dp.log" || { cat "resumed$tp$dp.log"; fail "$tag: did not resume at step 20"; }
  same_losses "base$tp$dp" "run$tp$dp" 21 40 "$tag, killed after step $kill_step on rank $kill_rank"
  cmp -s "base$tp$dp/model.safetensors" "run$tp$dp/model.safetensors" ||
    fail "$tag: final weights differ from the uninterrupted run"
  note "$tag: killed after step $kill_step on rank $kill_rank; steps 21..40 and final weights bit-identical"
done

# launch --max-restarts: the launcher restarts the failed job itself. Bit-identity holds for the
# same threads per rank only (oneDNN's GEMM may round differently at 1 and 2 threads, e.g. on
# AVX2-only CPUs), so the launched ranks get the reference runs' OMP_NUM_THREADS, not launch's
# default of cores / ranks.
tp=${1%,*} dp=${1#*,}
rc=0
CR_TEST_KILL_AT_STEP=$((21 + RANDOM % 9)) "$BIN" launch --nproc $((tp * dp)) --threads "$OMP_NUM_THREADS" \
  --max-restarts 1 "$CKPT_CFG" \
  --set parallel.tensor="$tp" "${COMMON[@]}" --set run.dir=relaunch --set checkpoint.dir=ck_relaunch \
  >relaunch.log 2>&1 || rc=$?
[[ $rc -eq 0 ]] || { cat relaunch.log; fail "launch --max-restarts 1: exit $rc"; }
grep -q "restart 1 of 1" relaunch.log || { cat relaunch.log; fail "launch did not restart the job"; }
grep -q "resumed at step 20" relaunch.log || { cat relaunch.log; fail "the restarted job did not resume at step 20"; }
same_losses "base$tp$dp" relaunch 21 40 "launch --max-restarts at tp=$tp dp=$dp"
note "launch --max-restarts 1: restarted after the kill, resumed at step 20, bit-identical"

# Exhausted restarts: the job's failure is the launcher's exit status.
rc=0
CR_TEST_KILL_AT_STEP=5 CR_TEST_KILL_RANK=0 "$BIN" launch --nproc 1 "$CKPT_CFG" "${COMMON[@]}" \
  --set run.dir=norestart --set checkpoint.dir=ck_norestart >norestart.log 2>&1 || rc=$?
[[ $rc -ne 0 ]] || fail "launch without restarts reported success for a killed job"
echo "ckpt_resume: ok"
