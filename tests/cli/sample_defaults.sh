#!/usr/bin/env bash
# Sampling defaults (issue 14 part 6), on a char model whose corpus has no newline:
#  - no --prompt starts from the end-of-text token (it failed on U+000A, a character the user
#    never typed); a legacy tokenizer without one starts from token 0, with a warning;
#  - a prompt of exactly block_size tokens is accepted and generation runs past the full cache;
#  - a longer prompt keeps its last block_size tokens, with a warning naming both lengths: its
#    continuation equals that of the cropped prompt.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

# A corpus without a newline (one long line), block_size 32 (tiny.yaml).
"$PY" -c 'import sys; sys.stdout.write("the cat sat on the mat. a dog ran in the park. " * 400)' \
  >corpus.txt
run_ok "$CR" prepare --input corpus.txt --tokenizer char --out data
run_ok "$CR" train "$TINY" --set train.max_steps=20 --set run.eval_every=0
SAMPLE=("$CR" sample run --temperature 0 --max-new-tokens 40)

# 1. No --prompt: generation from the end-of-text token, a clean stderr.
run_ok "${SAMPLE[@]}"
[[ $(wc -c <"$T/.run_ok.out") -gt 20 ]] || fail "no text generated without --prompt"

# 2. A prompt of exactly block_size = 32 tokens (it was rejected), 40 new tokens: past the cache.
P32="the cat sat on the mat. a dog ra"
[[ ${#P32} == 32 ]] || fail "test setup: prompt is ${#P32} characters"
run_ok "${SAMPLE[@]}" --prompt "$P32"
out32=$(cat "$T/.run_ok.out")
[[ $out32 == "$P32"* && ${#out32} -gt $((32 + 20)) ]] ||
  fail "a block_size prompt did not generate past the full context: '$out32'"

# 3. A 45-token prompt ending in P32: a warning naming 45 and 32, the whole prompt echoed, then
#    the same continuation as P32 alone (greedy), so the kept tokens are the last 32.
P45="in the park. $P32"
"${SAMPLE[@]}" --prompt "$P45" >long.out 2>long.err || fail "a long prompt failed: $(cat long.err)"
[[ $(grep -c '' long.err) == 1 ]] && grep -q 'warning: --prompt has 45 tokens .*context is 32.*last 32' long.err ||
  fail "expected one warning naming 45 and 32 tokens, got: $(cat long.err)"
out45=$(cat long.out)
[[ $out45 == "$P45"* ]] || fail "the long prompt is not echoed whole: '$out45'"
[[ ${out45#"$P45"} == "${out32#"$P32"}" ]] ||
  fail "the long prompt's continuation differs from its last 32 tokens':
  '${out45#"$P45"}'
  '${out32#"$P32"}'"

# 4. A legacy tokenizer (no end-of-text token, no newline in its vocabulary): no --prompt starts
#    from token 0 with one warning, and never fails on U+000A.
"$PY" - run/tokenizer.chainrule.json <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
for k in ("eot", "eot_id"):
    j.pop(k, None)
j["vocab_size"] = len(j["chars"])
json.dump(j, open(sys.argv[1], "w"))
EOF
"${SAMPLE[@]}" >legacy.out 2>legacy.err || fail "legacy tokenizer without --prompt failed: $(cat legacy.err)"
[[ $(grep -c '' legacy.err) == 1 ]] && grep -q 'warning: no --prompt.*token 0' legacy.err ||
  fail "expected one warning about starting from token 0, got: $(cat legacy.err)"
note "sampling defaults: all cases pass"
