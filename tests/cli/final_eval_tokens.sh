#!/usr/bin/env bash
# run.final_eval_tokens: the final evaluation scores a fixed prefix of ceil(N / block_size) full
# windows (the same windows as a periodic evaluation of that many, so the same loss); 0, or a
# size the split does not exceed, scores the whole val split.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

prepare_tiny_data data
STEPS=(--set train.max_steps=5 --set run.eval_every=0)
# tiny.yaml: block_size 32, micro_batch 2. 100 tokens -> 4 windows = 128 tokens.
run_ok "$CR" train "$TINY" "${STEPS[@]}" --set run.dir=prefix --set run.final_eval_tokens=100
run_ok "$CR" train "$TINY" "${STEPS[@]}" --set run.dir=whole
run_ok "$CR" train "$TINY" "${STEPS[@]}" --set run.dir=huge --set run.final_eval_tokens=1000000000
# No training: the final evaluation of 100 tokens at step 0 against the periodic one at step 0
# of eval_batches 2 x micro_batch 2 = 4 windows, from the same initial weights.
run_ok "$CR" train "$TINY" --set train.max_steps=0 --set run.dir=final0 --set run.final_eval_tokens=100
run_ok "$CR" train "$TINY" --set train.max_steps=1 --set run.eval_every=1 --set run.eval_batches=2 \
  --set run.dir=periodic0
"$PY" - <<'PYEOF'
import json, sys
def evals(d):
    return [json.loads(l) for l in open(d + "/metrics.jsonl") if '"type":"eval"' in l]
def fail(msg):
    sys.exit("FAIL: " + msg)
prefix, whole, huge = evals("prefix")[-1], evals("whole")[-1], evals("huge")[-1]
if prefix["tokens"] != 128 or prefix["full_split"]:
    fail("final_eval_tokens=100: %s, expected 128 tokens, not the full split" % prefix)
if not whole["full_split"] or whole["tokens"] <= 128:
    fail("final_eval_tokens=0: %s, expected the full split" % whole)
if huge["tokens"] != whole["tokens"] or huge["val_loss"] != whole["val_loss"] or not huge["full_split"]:
    fail("final_eval_tokens=1e9: %s, expected the full split %s" % (huge, whole))
f0, p0 = evals("final0"), evals("periodic0")
if len(f0) != 1 or f0[0]["step"] != 0 or f0[0]["tokens"] != 128:
    fail("max_steps=0: %s, expected one final eval of 128 tokens at step 0" % f0)
if p0[0]["step"] != 0 or p0[0]["tokens"] != 128 or p0[0]["val_loss"] != f0[0]["val_loss"]:
    fail("the final prefix %s differs from the periodic evaluation of the same windows %s" % (f0[0], p0[0]))
print("-- prefix of 128 tokens: %.6f; whole split (%d tokens): %.6f; same windows as periodic: %.6f"
      % (prefix["val_loss"], whole["tokens"], whole["val_loss"], p0[0]["val_loss"]))
PYEOF
grep -q '^  final_eval_tokens: 100$' prefix/config.yaml || fail "config.yaml does not record final_eval_tokens"
