#!/usr/bin/env bash
# Pre-emption: SIGTERM or SIGUSR1 makes every rank agree, save a checkpoint at the next step
# boundary and exit 0; resuming continues bit-identically. Covers `chainrule train` (1 rank,
# SIGTERM), mpirun (SIGUSR1, which mpirun forwards to every rank) and `chainrule launch` (SIGTERM,
# which it turns into SIGUSR1 for mpirun). Without checkpoint.dir the stop says nothing was saved.
set -euo pipefail
source "$(dirname "$0")/ckpt_lib.sh"
ckpt_init "$1" "$2"
MAX=(--set train.max_steps=100000 --set run.log_every=100000)  # long enough to be interrupted

# wait_steps RUN_DIR N: until the run has logged N steps (at most 60 s).
wait_steps() {
  for _ in $(seq 600); do
    [[ -f $1/metrics.jsonl && $(grep -c '"type":"train"' "$1/metrics.jsonl") -ge $2 ]] && return 0
    sleep 0.1
  done
  fail "$1: fewer than $2 steps after 60 s"
}

# interrupt NAME SIGNAL CMD...: starts CMD in the background, signals it after 30 steps, and
# checks the stop: exit 0, one checkpoint at the step it reports, which verifies.
interrupt() {
  local name=$1 sig=$2
  shift 2
  "$@" --set run.dir="$name" --set checkpoint.dir="ck_$name" >"$name.log" 2>&1 &
  local pid=$! rc=0
  wait_steps "$name" 30
  kill "-$sig" "$pid"
  wait "$pid" || rc=$?
  [[ $rc -eq 0 ]] || { cat "$name.log"; fail "$name: exit $rc after SIG$sig, expected 0"; }
  STOP=$(sed -n 's/.*stopped after step \([0-9]*\) (signal.*/\1/p' "$name.log")
  [[ -n $STOP ]] || { cat "$name.log"; fail "$name: no 'stopped after step N (signal ...)' line"; }
  [[ $(ls "ck_$name") == "$(printf 'step_%08d' "$STOP")" ]] ||
    fail "$name: expected exactly the checkpoint of step $STOP, found: $(ls "ck_$name")"
  "$BIN" ckpt verify "ck_$name" >/dev/null || fail "$name: the checkpoint does not verify"
  note "$name: SIG$sig -> saved step $STOP, exit 0"
}

# continues NAME TP DP: resuming to STOP+10 gives the same steps as an uninterrupted run to there.
continues() {
  local name=$1 tp=$2 dp=$3 until=$((STOP + 10))
  train_layout "$tp" "$dp" "$name.resume.log" "${MAX[@]}" --set train.stop_after_step=$until \
    --set run.dir="$name" --set checkpoint.dir="ck_$name" || { cat "$name.resume.log"; fail "$name: resume failed"; }
  grep -q "resumed at step $STOP" "$name.resume.log" || fail "$name: did not resume at step $STOP"
  train_layout "$tp" "$dp" "$name.ref.log" "${MAX[@]}" --set train.stop_after_step=$until \
    --set run.dir="$name.ref" || { cat "$name.ref.log"; fail "$name: reference run failed"; }
  same_losses "$name.ref" "$name" $((STOP + 1)) "$until" "$name: steps after the stop"
  note "$name: resumed at step $STOP; steps $((STOP + 1))..$until bit-identical"
}

interrupt single TERM "$BIN" train "$CKPT_CFG" "${MAX[@]}"
continues single 1 1

interrupt mpirun USR1 mpirun -np 2 --bind-to none -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS \
  "$BIN" train "$CKPT_CFG" "${MAX[@]}" --set parallel.tensor=2
continues mpirun 2 1

# Same threads per rank as the runs it is compared with (see lib.sh).
interrupt launch TERM "$BIN" launch --nproc 2 --threads "$OMP_NUM_THREADS" "$CKPT_CFG" "${MAX[@]}"
continues launch 1 2

# No checkpoint.dir: the stop is reported as losing the progress, with 128 + SIGTERM.
"$BIN" train "$CKPT_CFG" "${MAX[@]}" --set run.dir=nosave >nosave.log 2>&1 &
pid=$!
wait_steps nosave 10
kill -TERM $pid
rc=0
wait $pid || rc=$?
[[ $rc -eq 143 ]] || { cat nosave.log; fail "no checkpoint.dir: exit $rc after SIGTERM, expected 143"; }
grep -q "nothing was saved" nosave.log || fail "no checkpoint.dir: no warning that nothing was saved"
note "no checkpoint.dir: SIGTERM -> exit 143 with a warning"
echo "ckpt_signal: ok"
