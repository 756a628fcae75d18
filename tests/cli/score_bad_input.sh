#!/usr/bin/env bash
# `chainrule score` on bad input: each case exits non-zero with one stderr line naming the flag,
# file or value and what was expected (expect_error in lib.sh), and writes no --html page.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

prepare_tiny_data data
run_ok "$CR" train "$TINY" --set run.dir=run --set train.max_steps=2 --set run.eval_every=0
printf 'the cat sat.\n' >ok.txt
: >empty.txt

expect_error 'score: give one of --input FILE or --tokens' -- "$CR" score run
expect_error '--input nope\.txt' 'no such file' -- "$CR" score run --input nope.txt
expect_error '--input empty\.txt' 'empty' 'nothing to score' -- "$CR" score run --input empty.txt
expect_error '--input <stdin>' 'empty' -- "$CR" score run --input - </dev/null
expect_error '--html /.*: is a directory' -- "$CR" score run --input ok.txt --html "$T"
printf 'The Cat.\n' >upper.txt  # capitals are outside this char vocabulary
expect_error '--input upper\.txt' -- "$CR" score run --input upper.txt
expect_error '--stride 33' 'expected 1 \.\. 32' -- "$CR" score run --input ok.txt --stride 33
expect_error '--stride -1' 'expected 1 \.\. 32' -- "$CR" score run --input ok.txt --stride -1
expect_error '--top -1' 'expected 0 or more' -- "$CR" score run --input ok.txt --top -1
expect_error '--micro-batch 0' 'positive' -- "$CR" score run --input ok.txt --micro-batch 0
expect_error '--color sometimes' 'auto, always or never' -- "$CR" score run --input ok.txt --color sometimes
write_shard oov.bin --n 50 --period 20 --append 500
expect_error '--tokens oov\.bin' 'token id 500 at position 50' 'vocabulary \[0, 27\)' \
  -- "$CR" score run --tokens oov.bin
write_shard one.bin --n 1
expect_error '--tokens one\.bin' '1 token' 'nothing to score' -- "$CR" score run --tokens one.bin
mkdir bare && cp run/model.safetensors run/config.json bare/
expect_error 'no tokenizer found' '--data DIR' -- "$CR" score bare --input ok.txt
expect_error '--html nodir/x\.html' 'no such directory' -- "$CR" score run --input ok.txt --html nodir/x.html
[[ ! -e nodir ]] || fail "a failed --html created nodir/"
# A failed score leaves no page and no temporary file beside it.
expect_error '--input empty\.txt' -- "$CR" score run --input empty.txt --html page.html
[[ -z $(ls -A | grep -E '^\.?page\.html') ]] || fail "a failed score left $(ls -A | grep page)"
