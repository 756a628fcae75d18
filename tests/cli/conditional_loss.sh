#!/usr/bin/env bash
# Conditional loss end to end: prompt->completion pairs whose completion is the prompt's letters
# reversed (make_pairs.py), so H(completion | prompt) = 0. prepare --format pairs writes a loss
# mask; training with it counts only the completions, with a document mask and prefix-LM (the
# prompt read bidirectionally). The same pairs as plain text, trained as a plain causal LM on
# every token, are the baseline: both are scored on the completions of the same val split, and
# the masked training must reach a far lower completion loss in the same steps.
# Also: `eval` of the masked run applies the run's masks (its loss equals the final evaluation),
# scores only counted tokens, and `sample --prefix-lm` generates.
source "$(dirname "$0")/lib.sh"
cli_init "$@"
STEPS=${COND_STEPS:-500}

"$PY" "$CLI_DIR/make_pairs.py" pairs.jsonl 3000 1
"$PY" - <<'PY'
import json
with open("pairs.jsonl") as f, open("text.jsonl", "w") as g:
    for line in f:
        d = json.loads(line)
        g.write(json.dumps({"text": d["prompt"] + d["completion"]}) + "\n")
PY
"$CR" prepare --input pairs.jsonl --format pairs --prompt-field prompt --completion-field completion \
  --tokenizer char --out pairs >prepare.log 2>&1 || { cat prepare.log; fail "prepare --format pairs failed"; }
"$CR" prepare --input text.jsonl --tokenizer char --out text >>prepare.log 2>&1 \
  || { cat prepare.log; fail "prepare of the same text failed"; }
cat >cond.yaml <<'YAML'
model: {n_layer: 2, n_head: 4, n_embd: 64, block_size: 32, vocab_size: 0}
train: {global_batch: 16, micro_batch: 16, lr: 3.0e-3, min_lr: 3.0e-4, warmup_steps: 20,
        weight_decay: 0.1, grad_clip: 1.0, seed: 1}
run: {log_every: 100, eval_every: 0}
YAML
"$CR" train cond.yaml --set train.max_steps="$STEPS" --set data.dir=pairs --set data.document_mask=true \
  --set model.prefix_lm=true --set run.dir=masked >train_masked.log 2>&1 \
  || { cat train_masked.log; fail "masked training failed"; }
"$CR" train cond.yaml --set train.max_steps="$STEPS" --set data.dir=text --set run.dir=plain \
  >train_plain.log 2>&1 || { cat train_plain.log; fail "plain training failed"; }

"$CR" eval masked --json >eval_masked.json || fail "eval of the masked run failed"
"$CR" eval plain --data pairs --json >eval_plain.json || fail "eval of the plain run on the pairs failed"
"$PY" - masked/metrics.jsonl eval_masked.json eval_plain.json pairs/dataset.json "$STEPS" <<'PY'
import json, sys
final = [json.loads(l) for l in open(sys.argv[1]) if '"eval"' in l][-1]
masked, plain = json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
counted = json.load(open(sys.argv[4]))["val"]["counted_tokens"]
print("-- completion loss after %s steps: masked (loss mask, document mask, prefix-LM) %.4f nats, "
      "plain causal LM %.4f nats, on %d completion tokens" % (sys.argv[5], masked["val_loss"],
                                                                plain["val_loss"], masked["tokens"]))
def fail(msg):
    sys.exit("FAIL: " + msg)
# eval reads the run's masks: the same number as the training run's final evaluation.
if abs(masked["val_loss"] - final["val_loss"]) > 1e-6 * final["val_loss"]:
    fail("eval %.6f differs from the final evaluation %.6f" % (masked["val_loss"], final["val_loss"]))
# Every counted val token is scored, except the split's first token (nothing precedes it).
for r in (masked, plain):
    if not counted - 1 <= r["tokens"] <= counted:
        fail("eval scored %d tokens; the val split counts %d completion tokens" % (r["tokens"], counted))
if not masked["val_loss"] < 0.75 * plain["val_loss"]:
    fail("the masked completion loss %.4f is not far below the plain LM's %.4f"
         % (masked["val_loss"], plain["val_loss"]))
PY
out=$("$CR" sample masked --prompt "abc=" --prefix-lm --temperature 0 --max-new-tokens 4 2>&1) \
  || fail "sample --prefix-lm failed: $out"
[[ $out == abc=* && ${#out} -ge 5 ]] || fail "sample --prefix-lm printed '$out'"
note "sample --prefix-lm: $out"
echo "conditional_loss: ok"
