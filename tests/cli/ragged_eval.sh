#!/usr/bin/env bash
# Ragged evaluation (issue 11): a 2-layer, 64-wide model with block_size 256, vocab_size 50257 and
# micro_batch 8, on llm.c shards of uniformly random token ids, the val shard 16,384 tokens: 63
# full windows and a tail of 255. The final evaluation then runs micro-batches of 8, one of 7 and
# one window of T = 255 through buffers first sized for 8 x 256 by the training step. This
# corrupted the heap (`free(): invalid next size (normal)` at exit, exit 134, 3 runs in 3); under
# the sanitizer build (CR_SANITIZE=ON) AddressSanitizer names the write. One training step and
# one evaluation of 16,384 tokens over a 50257-word vocabulary: about 25 s on 2 cores.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

mkdir shards
write_random_shard shards/rand_train.bin 20000 50257 1
write_random_shard shards/rand_val.bin 16384 50257 2
cat >ragged.yaml <<'YAML'
model: {n_layer: 2, n_head: 4, n_embd: 64, block_size: 256, vocab_size: 50257}
train: {global_batch: 8, micro_batch: 8, max_steps: 1, lr: 1.0e-3, min_lr: 1.0e-4, warmup_steps: 1, seed: 1}
data: {dir: shards}
run: {dir: run, log_every: 1, eval_every: 0}
YAML
run_ok "$CR" train ragged.yaml
"$PY" - run/metrics.jsonl <<'PYEOF'
import json, sys
evals = [json.loads(l) for l in open(sys.argv[1]) if '"type":"eval"' in l]
if len(evals) != 1:
    sys.exit("FAIL: %d eval lines, expected the final one only" % len(evals))
final = evals[0]
# 63 windows of 256 and the tail of 255 targets: every one of the 16,383 targets.
if final["step"] != 1 or final["tokens"] != 63 * 256 + 255 or not final["full_split"]:
    sys.exit("FAIL: final eval %s, expected step 1 over 16383 tokens (full split)" % final)
print("-- final eval over %d tokens: val loss %.4f" % (final["tokens"], final["val_loss"]))
PYEOF
note "train, then evaluate in micro-batches of 8, 7 and one ragged window: exit 0, nothing on stderr"
