#!/usr/bin/env bash
# --set overrides: they change the run, the resolved config.yaml records them, and the last of
# repeated --set for one key wins.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

prepare_tiny_data data
run_ok "$CR" train "$TINY" --set train.max_steps=3 --set run.dir=over --set train.lr=0.005 \
  --set train.seed=99 --set run.eval_every=0 --set train.warmup_steps=9 --set train.warmup_steps=2
[[ -d over ]] || fail "--set run.dir=over did not take: no over/ directory"
[[ ! -e run ]] || fail "the config's run.dir (run) was created despite --set run.dir=over"

n=$(json_field_text over/metrics.jsonl train step | wc -l)
[[ $n -eq 3 ]] || fail "--set train.max_steps=3 gave $n train lines"
[[ $(json_field_text over/metrics.jsonl train step | tr '\n' ' ') == "1 2 3 " ]] ||
  fail "train steps are not 1 2 3"
# run.eval_every=0: only the final evaluation.
[[ $(json_field_text over/metrics.jsonl eval step | tr '\n' ' ') == "3 " ]] ||
  fail "--set run.eval_every=0: expected one eval line at step 3, got steps: $(json_field_text over/metrics.jsonl eval step | tr '\n' ' ')"

for want in '  max_steps: 3' '  lr: 0.005' '  seed: 99' '  dir: over' '  eval_every: 0' \
  '  warmup_steps: 2' '  n_layer: 2'; do
  grep -qx "$want" over/config.yaml || fail "config.yaml lacks '$want':
$(cat over/config.yaml)"
done

# The recorded config reproduces the run: training from it (into another dir) gives the same losses.
sed 's/^  dir: over$/  dir: again/' over/config.yaml >again.yaml
run_ok "$CR" train again.yaml
diff <(json_field_text over/metrics.jsonl train loss) <(json_field_text again/metrics.jsonl train loss) \
  >/dev/null || fail "retraining from the recorded config.yaml gave different losses"
# lr at step 1 is lr * 1/warmup_steps = 0.005 / 2 (linear warmup): the override reached the optimizer.
"$PY" - over/metrics.jsonl <<'EOF'
import json, sys
lr1 = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l][0]["lr"]
if not abs(lr1 - 0.0025) < 1e-6:
    sys.exit("FAIL: step-1 lr is %g, expected 0.005 / 2 warmup steps = 0.0025" % lr1)
EOF
