#!/usr/bin/env bash
# Determinism: the same config and seed, trained twice, give bit-identical train losses (compared
# as the text in metrics.jsonl) and an identical model.safetensors; another seed gives different
# losses and weights.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

prepare_tiny_data data
train() {  # train RUN_DIR SEED
  run_ok "$CR" train "$TINY" --set "run.dir=$1" --set "train.seed=$2" --set train.max_steps=20
}
train a 7
train b 7
train c 8

json_field_text a/metrics.jsonl train loss >a.loss
json_field_text b/metrics.jsonl train loss >b.loss
json_field_text c/metrics.jsonl train loss >c.loss
[[ $(wc -l <a.loss) -eq 20 ]] || fail "expected 20 train losses, got $(wc -l <a.loss)"

diff a.loss b.loss >/dev/null || fail "same seed, different train losses:
$(diff a.loss b.loss | head -n 10)"
cmp a/model.safetensors b/model.safetensors || fail "same seed, different model.safetensors"
json_field_text a/metrics.jsonl eval val_loss >a.val
json_field_text b/metrics.jsonl eval val_loss >b.val
diff a.val b.val >/dev/null || fail "same seed, different val losses"
note "seed 7 twice: identical losses ($(tail -n 1 a.loss) at step 20) and weights"

# The first loss can agree (every init is near ln V); the run as a whole must not.
! diff a.loss c.loss >/dev/null || fail "seeds 7 and 8 gave identical train losses"
! cmp -s a/model.safetensors c/model.safetensors || fail "seeds 7 and 8 gave identical weights"
note "seed 8 differs: final loss $(tail -n 1 c.loss)"
