#!/usr/bin/env bash
# The default path: `prepare` with no --input reads the default corpus (Debian's fortunes, skipping
# its binary .dat files), and configs/default.yaml loads and trains (shrunk with --set).
# Skipped (exit 77) where /usr/share/games/fortunes is missing.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

corpus=/usr/share/games/fortunes
if [[ ! -d $corpus ]]; then
  echo "SKIP: $corpus is missing (apt-get install fortunes)"
  exit 77
fi

run_ok "$CR" prepare --tokenizer char --out fortunes
grep -Eq 'skipped [1-9][0-9]* binary files' "$T/.run_ok.out" ||
  fail "prepare did not report skipping the .dat files:
$(cat "$T/.run_ok.out")"
"$PY" - fortunes/dataset.json <<'EOF'
import json, sys
ds = json.load(open(sys.argv[1]))
if ds["tokenizer"]["type"] != "char" or not 50 < ds["tokenizer"]["vocab_size"] < 1000:
    sys.exit("FAIL: unexpected tokenizer %s" % ds["tokenizer"].get("vocab_size"))
if ds["train"]["tokens"] < 100000 or ds["val"]["tokens"] < 10000:
    sys.exit("FAIL: the default corpus is unexpectedly small: %s" % {k: ds[k] for k in ("train", "val")})
print("-- fortunes: vocab %d, %d train + %d val tokens"
      % (ds["tokenizer"]["vocab_size"], ds["train"]["tokens"], ds["val"]["tokens"]))
EOF

# configs/default.yaml, with the model shrunk so that it takes about a second.
run_ok "$CR" train "$SRC/configs/default.yaml" --set data.dir=fortunes --set run.dir=run \
  --set model.n_layer=1 --set model.n_embd=32 --set model.block_size=32 \
  --set train.global_batch=4 --set train.micro_batch=4 --set train.max_steps=3 \
  --set run.eval_batches=2
for want in '  n_head: 4' '  lr: 0.003' '  seed: 1337' '  max_steps: 3'; do
  grep -qx "$want" run/config.yaml || fail "run/config.yaml lacks '$want' (from configs/default.yaml or --set)"
done
n=$(json_field_text run/metrics.jsonl train step | wc -l)
[[ $n -eq 3 ]] || fail "expected 3 train lines, got $n"
run_ok "$CR" sample run --prompt "Q: " --max-new-tokens 10 --seed 1
grep -q '^Q: ' "$T/.run_ok.out" || fail "sample output does not start with the prompt"
