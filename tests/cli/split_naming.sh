#!/usr/bin/env bash
# Split naming (issue 14 part 4): a shard's split comes from whole components of its name
# (*_train_*.bin, *_val_*.bin), or from the data.train_files / data.val_files globs. Training and
# `eval` read the same splits. The issue's two cases verbatim, then the error cases.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

TRAIN=("$CR" train "$TINY" --set model.vocab_size=64 --set train.max_steps=2 --set run.eval_every=0)

# eval --json's token count: the whole val split is scored, so it is the val tokens minus one.
eval_tokens() {
  run_ok "$CR" eval "$1" --json
  "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["tokens"])' "$T/.run_ok.out"
}

# 1. The issue: a directory holding only interval_train_000001.bin used that training shard as
#    the validation split too ("interval" contains "val").
mkdir interval
write_shard interval/interval_train_000001.bin --n 2000
expect_error "data\.dir 'interval'" 'no val shard' 'data\.val_files' \
  -- "${TRAIN[@]}" --set data.dir=interval --set run.dir=run_interval

# 2. The issue: with retrieval_train_000001.bin and retrieval_val_000000.bin the train shard was
#    counted into the validation split ("retrieval" contains "val"). Each is in its own split now:
#    eval scores the 1000-token val shard alone (999 targets), not 3000 tokens more.
mkdir retrieval
write_shard retrieval/retrieval_train_000001.bin --n 3000
write_shard retrieval/retrieval_val_000000.bin --n 1000
run_ok "${TRAIN[@]}" --set data.dir=retrieval --set run.dir=run_retrieval
[[ $(eval_tokens run_retrieval) == 999 ]] || fail "eval did not score the val shard alone"

# 3. A name with both components is ambiguous: an error naming the file.
mkdir both
write_shard both/x_train_000000.bin --n 2000
write_shard both/x_val_000000.bin --n 1000
write_shard both/x_train_val_000000.bin --n 1000
expect_error 'both/x_train_val_000000\.bin' "both a 'train' and a 'val' component" \
  -- "${TRAIN[@]}" --set data.dir=both --set run.dir=run_both

# 4. Globs for another layout (subdirectories, no split in the names); `eval` of the run uses the
#    run's globs too (1500 val tokens in two files: 1498 targets, one lost per file).
mkdir -p layout/tr layout/ho
write_shard layout/tr/part-000.bin --n 2000
write_shard layout/tr/part-001.bin --n 2000
write_shard layout/ho/part-000.bin --n 1000
write_shard layout/ho/part-001.bin --n 500
run_ok "${TRAIN[@]}" --set data.dir=layout --set run.dir=run_layout \
  --set 'data.train_files=tr/*.bin' --set "data.val_files=$T/layout/ho/part-00{0,1}.bin"
[[ $(eval_tokens run_layout) == 1498 ]] || fail "eval of the run did not read data.val_files"
grep -q "^  val_files: $T/layout/ho/part-00{0,1}.bin$" run_layout/config.yaml ||
  fail "config.yaml does not record data.val_files"

# 5. A glob matching nothing, and a file in both splits: one-line errors naming key and file.
expect_error "data\.val_files 'held/\*\.bin'" 'matches no token shard file' "data\.dir 'layout'" \
  -- "${TRAIN[@]}" --set data.dir=layout --set run.dir=run_x --set 'data.train_files=tr/*.bin' \
  --set 'data.val_files=held/*.bin'
expect_error 'retrieval/retrieval_val_000000\.bin is in both splits' "data\.train_files '\*\.bin'" \
  -- "${TRAIN[@]}" --set data.dir=retrieval --set run.dir=run_y --set 'data.train_files=*.bin'
note "split naming: all cases pass"
