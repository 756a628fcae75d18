#!/usr/bin/env bash
# A stop signal during an evaluation is honoured between its micro-batches, not after it: the
# ranks agree on the flag before each micro-batch, save the checkpoint of the steps done and
# exit as a signal stop does after a step. The val split (1,000,000 random tokens, vocabulary
# 50257) takes minutes to evaluate on 2 cores; each case must end within BOUND seconds of its
# signal, and its evaluation must not have been finished.
#   final     SIGTERM during the final evaluation (1 rank): checkpoint of the last step kept,
#             model exported, exit 0; a rerun resumes there and evaluates.
#   periodic  SIGTERM to `chainrule launch` (tp 2: the ranks agree through a collective) during
#             a periodic evaluation after step 2: saves step 2, exit 0.
#   nosave    no checkpoint.dir, SIGTERM during the final evaluation: exit 143, model exported.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"
BOUND=${CR_EVAL_SIGNAL_BOUND:-15}

mkdir shards
write_random_shard shards/rand_train.bin 20000 50257 1
write_random_shard shards/rand_val.bin 1000000 50257 2
cat >sig.yaml <<'YAML'
model: {n_layer: 2, n_head: 4, n_embd: 64, block_size: 256, vocab_size: 50257}
train: {global_batch: 8, micro_batch: 8, max_steps: 1, lr: 1.0e-3, min_lr: 1.0e-4, warmup_steps: 1, seed: 1}
data: {dir: shards}
run: {dir: run, log_every: 1, eval_every: 0, eval_batches: 100000}
YAML

# wait_for CONDITION...: polls CONDITION for up to 120 s.
wait_for() {
  for _ in $(seq 1200); do
    if "$@"; then return 0; fi
    sleep 0.1
  done
  fail "timed out waiting for: $*"
}
train_lines() { [[ -f $1/metrics.jsonl ]] && [[ $(grep -c '"type":"train"' "$1/metrics.jsonl") -ge $2 ]]; }

# stop_during_eval NAME SIGNAL EXPECTED_RC CMD...: runs CMD (in its own process group) in the
# background until READY (a command) holds, lets the evaluation start, signals CMD, and checks
# that it ends within BOUND seconds (else the whole group is killed and the test fails) with
# EXPECTED_RC.
stop_during_eval() {
  local name=$1 sig=$2 want=$3
  shift 3
  setsid "$@" >"$name.log" 2>&1 &
  local pid=$!
  wait_for "${READY[@]}"
  sleep 1  # into the evaluation: a micro-batch takes well under a second
  local t0=$SECONDS rc=0
  kill "-$sig" "$pid"
  while kill -0 "$pid" 2>/dev/null && ((SECONDS - t0 <= BOUND)); do sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" || true
    cat "$name.log"
    fail "$name: still running $BOUND s after SIG$sig during the evaluation (killed)"
  fi
  wait "$pid" || rc=$?
  [[ $rc -eq $want ]] || { cat "$name.log"; fail "$name: exit $rc after SIG$sig, expected $want"; }
  note "$name: SIG$sig during the evaluation -> exit $rc after $((SECONDS - t0)) s"
}

# ---- final: SIGTERM during the final evaluation, 1 rank --------------------------------------
READY=(test -d ck_final/step_00000001)
stop_during_eval final TERM 0 "$CR" train sig.yaml --set run.dir=final --set checkpoint.dir=ck_final
grep -q 'stopped after step 1 (signal .*during the final evaluation' final.log ||
  { cat final.log; fail "final: no 'stopped after step 1 (signal ..., during the final evaluation' line"; }
! grep -q '"type":"eval"' final/metrics.jsonl || fail "final: the evaluation finished anyway"
[[ -s final/model.safetensors ]] || fail "final: the model was not exported"
[[ $(ls ck_final) == step_00000001 ]] || fail "final: checkpoints $(ls ck_final), expected step_00000001"
"$CR" ckpt verify ck_final >/dev/null || fail "final: the checkpoint does not verify"
# The same command finishes the job: resume at step 1, evaluate (a short one here), export.
run_ok "$CR" train sig.yaml --set run.dir=final --set checkpoint.dir=ck_final --set run.final_eval_tokens=2048
grep -q 'resumed at step 1' "$T/.run_ok.out" || fail "final: the rerun did not resume at step 1"
"$PY" - final/metrics.jsonl <<'PYEOF' || fail "final: the rerun did not evaluate 2048 tokens at step 1"
import json, sys
sys.exit(0 if [(j["step"], j["tokens"]) for j in map(json.loads, open(sys.argv[1]))
               if j.get("type") == "eval"] == [(1, 2048)] else 1)
PYEOF

# ---- periodic: SIGTERM to launch (2 ranks, tp 2) during the evaluation after step 2 ---------
# First 1 step without evaluations, then resume with eval_every 2: the evaluation at step 2
# (after training step 2) is the long one.
run_ok "$CR" train sig.yaml --set run.dir=periodic --set checkpoint.dir=ck_periodic \
  --set train.max_steps=100 --set train.stop_after_step=1
if command -v mpirun >/dev/null; then
  LAUNCH=("$CR" launch --nproc 2 --threads 1 sig.yaml --set parallel.tensor=2)
else
  note "no mpirun: the periodic case runs on 1 rank"
  LAUNCH=("$CR" train sig.yaml)
fi
READY=(train_lines periodic 2)
stop_during_eval periodic TERM 0 "${LAUNCH[@]}" --set run.dir=periodic --set checkpoint.dir=ck_periodic \
  --set train.max_steps=100 --set run.eval_every=2
grep -q 'resumed at step 1' periodic.log || { cat periodic.log; fail "periodic: did not resume at step 1"; }
grep -q 'stopped after step 2 (signal .*during the evaluation' periodic.log ||
  { cat periodic.log; fail "periodic: no 'stopped after step 2 (signal ..., during the evaluation' line"; }
! grep -q '"type":"eval"' periodic/metrics.jsonl || fail "periodic: the evaluation finished anyway"
[[ -d ck_periodic/step_00000002 ]] || fail "periodic: no checkpoint of step 2: $(ls ck_periodic)"
"$CR" ckpt verify ck_periodic >/dev/null || fail "periodic: the checkpoint does not verify"

# ---- nosave: no checkpoint.dir --------------------------------------------------------------
READY=(train_lines nosave 1)
stop_during_eval nosave TERM 143 "$CR" train sig.yaml --set run.dir=nosave
grep -q 'during the final evaluation' nosave.log || { cat nosave.log; fail "nosave: no warning"; }
[[ -s nosave/model.safetensors ]] || fail "nosave: the model was not exported"
echo "eval_signal: ok"
