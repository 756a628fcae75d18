#!/usr/bin/env bash
# prepare never loses or damages data (issue 14, part 3):
#  - files in --out that prepare did not write (gpt2_124M.bin, gpt2_tokenizer.bin, notes) stay
#    byte-identical through a first prepare and a re-prepare that replaces the dataset;
#  - a failed prepare (a bad .jsonl line; a corrupt .gz; --name colliding with a foreign file)
#    leaves the previous dataset byte-identical and no temporary directory;
#  - a train/val shard in --out that no dataset.json lists is refused (the loader would mix it in);
#  - a dataset of the older prepare (train_000000.bin, no file list) is replaced, foreign files kept;
#  - a failed prepare into a new --out creates nothing.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

make_text a.txt 2000 1
make_text b.txt 2500 2

snapshot() {  # snapshot DIR: name + sha256 of every file, sorted (hidden ones too)
  (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
}
no_temp() {  # no_temp DIR...: no prepare temp dir anywhere under or beside them
  local left
  left=$(find . -name '*prepare-tmp-*')
  [[ -z $left ]] || fail "a temporary directory was left: $left"
}

# Foreign files beside the dataset: untouched by a first prepare into the existing dir...
mkdir out
head -c 3000 /dev/urandom >out/gpt2_124M.bin
head -c 2000 /dev/urandom >out/gpt2_tokenizer.bin
echo "my notes" >out/notes.txt
foreign_before=$(cd out && sha256sum gpt2_124M.bin gpt2_tokenizer.bin notes.txt)
run_ok "$CR" prepare --input a.txt --tokenizer byte --out out --shard-tokens 8000
[[ -e out/data_train_000004.bin && -e out/dataset.json ]] || fail "no dataset in out: $(ls out)"
# ... and by a re-prepare that writes fewer shards (the old ones it does not replace go).
run_ok "$CR" prepare --input b.txt --tokenizer char --out out
[[ -e out/data_train_000000.bin && ! -e out/data_train_000001.bin ]] ||
  fail "the old dataset's extra shards were not replaced: $(ls out)"
foreign_after=$(cd out && sha256sum gpt2_124M.bin gpt2_tokenizer.bin notes.txt)
[[ $foreign_before == "$foreign_after" ]] || fail "prepare changed files it did not write"
no_temp

# A failed prepare leaves the previous dataset byte-identical: a .jsonl line without the field,
# named file:line, after 100 good lines (shards of the new dataset were being written).
before=$(snapshot out)
"$PY" - <<'EOF'
import json
with open("docs.jsonl", "w") as f:
    for i in range(100):
        f.write(json.dumps({"text": "document %d: the cat sat on the mat.\n" % i}) + "\n")
    f.write(json.dumps({"body": "no text field"}) + "\n")
EOF
expect_error 'docs\.jsonl:101' '"text"' '--text-field' -- \
  "$CR" prepare --input docs.jsonl --tokenizer byte --out out --shard-tokens 500
[[ $before == "$(snapshot out)" ]] || fail "a failed prepare changed --out"
no_temp
# A corrupt .gz names the file.
gzip -c a.txt | head -c 500 >cut.txt.gz
expect_error 'cut\.txt\.gz' 'gzip' -- "$CR" prepare --input cut.txt.gz --tokenizer byte --out out
[[ $before == "$(snapshot out)" ]] || fail "a failed prepare changed --out"
no_temp
# A new file name that a foreign file already has (a loss mask of --format pairs): refused
# before anything moves.
echo "someone's mask" >out/mine_val_000000.mask
before=$(snapshot out)
"$PY" "$CLI_DIR/make_pairs.py" pairs.jsonl 3000
expect_error 'mine_val_000000\.mask' 'did not write' -- \
  "$CR" prepare --input pairs.jsonl --format pairs --tokenizer byte --out out --name mine
[[ $before == "$(snapshot out)" ]] || fail "a refused prepare changed --out"
no_temp

# A train/val shard that no dataset.json lists would join the new dataset: refused, untouched.
mkdir mixed
cp out/data_val_000000.bin mixed/fineweb_val_000000.bin
expect_error 'fineweb_val_000000\.bin' 'did not write' -- \
  "$CR" prepare --input a.txt --tokenizer byte --out mixed
[[ $(ls mixed) == fineweb_val_000000.bin ]] || fail "a refused prepare changed --out: $(ls mixed)"

# The older prepare's layout: train_000000.bin, val_000000.bin and a dataset.json without a
# file list; they are replaced, gpt2_124M.bin is not.
mkdir legacy
cp out/data_train_000000.bin legacy/train_000000.bin
cp out/data_val_000000.bin legacy/val_000000.bin
echo '{"tokenizer": {"type": "byte"}, "train": {"tokens": 1}, "val": {"tokens": 1}}' >legacy/dataset.json
cp out/gpt2_124M.bin legacy/
run_ok "$CR" prepare --input a.txt --tokenizer byte --out legacy
[[ $(ls legacy | tr '\n' ' ') == "data_train_000000.bin data_val_000000.bin dataset.json gpt2_124M.bin " ]] ||
  fail "legacy dir after prepare: $(ls legacy | tr '\n' ' ')"
cmp -s legacy/gpt2_124M.bin out/gpt2_124M.bin || fail "gpt2_124M.bin changed"

# A failed prepare into a new --out (and new parents) creates nothing.
expect_error 'docs\.jsonl:101' -- "$CR" prepare --input docs.jsonl --out new/deeper/data
[[ ! -e new ]] || fail "a failed prepare created $(find new)"
no_temp
note "foreign files kept; failed prepares left --out byte-identical"
