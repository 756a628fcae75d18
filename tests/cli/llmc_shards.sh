#!/usr/bin/env bash
# Shards in llm.c's format and naming (tiny_train.bin, tiny_val.bin, no dataset.json) train with
# an explicit model.vocab_size, and eval reports bits/byte as unknown (n/a; null in --json).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

mkdir shards
# A cycle of 16 tokens (learnable), in a 64-token vocabulary; the val shard as version 2 (uint32).
write_shard shards/tiny_train.bin --n 8000 --period 16
write_shard shards/tiny_val.bin --n 2000 --period 16 --version 2
run_ok "$CR" train "$TINY" --set data.dir=shards --set model.vocab_size=64 --set train.max_steps=20
cp "$T/.run_ok.out" train.out
grep -q 'n/a bits/byte' train.out || fail "training's eval lines do not say n/a bits/byte:
$(grep eval train.out)"
grep -q '^  vocab_size: 64$' run/config.yaml || fail "config.yaml does not record vocab_size 64"

"$PY" - run/metrics.jsonl <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
train = [r for r in rows if r["type"] == "train"]
evals = [r for r in rows if r["type"] == "eval"]
if len(train) != 20:
    sys.exit("FAIL: %d train lines, expected 20" % len(train))
if any(r["val_bits_per_byte"] is not None for r in evals):
    sys.exit("FAIL: eval lines give bits/byte without byte counts: %s" % evals)
# A 16-cycle is learnable: loss starts near ln 64 = 4.16 and must fall clearly.
if not evals[-1]["val_loss"] < evals[0]["val_loss"] - 1.0:
    sys.exit("FAIL: val loss did not fall by 1 nat: %s -> %s" % (evals[0]["val_loss"], evals[-1]["val_loss"]))
print("-- val loss %.4f -> %.4f" % (evals[0]["val_loss"], evals[-1]["val_loss"]))
EOF

run_ok "$CR" eval run
grep -Eq '^bits/byte +n/a' "$T/.run_ok.out" || fail "eval does not print bits/byte as n/a:
$(cat "$T/.run_ok.out")"
run_ok "$CR" eval run --json
"$PY" - "$T/.run_ok.out" <<'EOF'
import json, math, sys
e = json.loads(open(sys.argv[1]).read())
if "val_bits_per_byte" not in e or e["val_bits_per_byte"] is not None:
    sys.exit("FAIL: eval --json should give val_bits_per_byte null: %s" % e)
if not abs(e["val_bits_per_token"] - e["val_loss"] / math.log(2)) < 1e-12 * e["val_bits_per_token"]:
    sys.exit("FAIL: val_bits_per_token != val_loss / ln 2: %s" % e)
if e["tokens"] != 1999:
    sys.exit("FAIL: evaluated %d tokens, expected 1999: %s" % (e["tokens"], e))
EOF
