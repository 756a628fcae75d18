#!/usr/bin/env bash
# run.tensorboard: TensorBoard's own reader (the pinned `tensorboard` package of the reference
# venv) reads the event files a run writes, and finds every scalar of metrics.jsonl with the same
# (step, value) list, the per-layer norms and the text samples (tensorboard_check.py).
# The run is killed after step 17 (its checkpoint is step 10, its last flush step 15) and resumed:
# two event files, the second's SessionLog START makes the reader drop the first's steps 11-15,
# as the resume line of metrics.jsonl supersedes them (without the purge they would show twice). The final text sample equals `chainrule sample`'s output.
# Negative control: one flipped byte in a copy of an event file is a data loss to the reader.
# Usage: tensorboard.sh CHAINRULE SOURCE_DIR VENV_PYTHON
set -euo pipefail
source "$(dirname "$0")/lib.sh"
VPY=${3:?usage: tensorboard.sh CHAINRULE SOURCE_DIR VENV_PYTHON}
cli_init "$@"
[[ -x $VPY ]] || fail "no venv python at $VPY (the reference.hf_venv fixture makes it)"

prepare_tiny_data data
SETS=(--set run.dir=run --set run.tensorboard=true --set run.eval_every=10 --set run.log_every=5
      --set checkpoint.dir=ck --set checkpoint.every=10 --set run.peak_tflops=0.01)
rc=0
CR_TEST_KILL_AT_STEP=17 "$CR" train "$TINY" "${SETS[@]}" >killed.out 2>&1 || rc=$?
[[ $rc -eq 137 ]] || fail "the run to kill after step 17 exited $rc, expected 137 (SIGKILL):
$(tail -5 killed.out)"
run_ok "$CR" train "$TINY" "${SETS[@]}"
grep -q "resumed at step 10" "$T/.run_ok.out" || fail "the second run did not resume at step 10"
n=$(ls run | grep -c '^events\.out\.tfevents\.') || true
[[ $n -eq 2 ]] || fail "expected 2 event files (one per run start), found $n: $(ls run)"

run_ok "$CR" sample run --max-new-tokens 64
cp "$T/.run_ok.out" final_sample.txt

OMP_NUM_THREADS=1 "$VPY" "$CLI_DIR/tensorboard_check.py" run final_sample.txt
