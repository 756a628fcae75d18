#!/usr/bin/env bash
# prepare's inputs: the same documents as plain text files, .gz, .zst (also several gzip members
# / zstd frames), a directory walked recursively, and .jsonl (--text-field, also compressed) give
# byte-identical shards; bad .jsonl lines, bad compressed data and binary files are named.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"
command -v zstd >/dev/null || fail "zstd is missing (deploy/install_deps.sh installs it)"

mkdir -p plain/sub
make_text plain/a.txt 1500 1
make_text plain/sub/b.txt 1500 2
printf 'caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80\n' >>plain/sub/b.txt
printf '\0\1binary' >plain/sub/c.dat  # skipped: a NUL in the first 64 KiB

shards() {  # shards DIR: sha256 of its shards, in order (names and dataset.json aside)
  cat "$1"/data_train_*.bin | sha256sum | cut -c1-16
  cat "$1"/data_val_*.bin | sha256sum | cut -c1-16
}
prep() {  # prep OUT INPUT... [-- extra flags]
  local out=$1
  shift
  run_ok "$CR" prepare --tokenizer byte --out "$out" --input "$@"
}

prep ref plain
grep -q 'read 2 text files.*2 documents.*skipped 1 binary files' "$T/.run_ok.out" ||
  fail "prepare did not read 2 documents and skip the binary file: $(cat "$T/.run_ok.out")"
want=$(shards ref)

# .gz and .zst, one file each; then several members/frames concatenated in one file.
mkdir gz zst cat
gzip -c plain/a.txt >gz/a.txt.gz
gzip -c plain/sub/b.txt >gz/b.txt.gz
zstd -q -c plain/a.txt >zst/a.txt.zst
zstd -q -c plain/sub/b.txt >zst/b.txt.zst
prep d_gz gz
prep d_zst zst
[[ $(shards d_gz) == "$want" ]] || fail ".gz inputs gave other shards than the plain text"
[[ $(shards d_zst) == "$want" ]] || fail ".zst inputs gave other shards than the plain text"
head -c 20000 plain/a.txt >cat/part1
tail -c +20001 plain/a.txt >cat/part2
(gzip -c cat/part1; gzip -c cat/part2) >cat/a.txt.gz
(zstd -q -c cat/part1; zstd -q -c cat/part2) >cat/a.txt.zst
prep d_cat1 cat/a.txt.gz plain/sub/b.txt
prep d_cat2 cat/a.txt.zst plain/sub/b.txt
[[ $(shards d_cat1) == "$want" ]] || fail "a multi-member .gz gave other shards"
[[ $(shards d_cat2) == "$want" ]] || fail "a multi-frame .zst gave other shards"

# .jsonl: one document per line, in a chosen field; blank lines skipped; also compressed.
"$PY" - <<'EOF'
import json
docs = [open("plain/a.txt", encoding="utf-8").read(), open("plain/sub/b.txt", encoding="utf-8").read()]
with open("docs.jsonl", "w") as f:
    for d in docs:
        f.write(json.dumps({"id": 1, "body": d}) + "\n\n")
EOF
run_ok "$CR" prepare --tokenizer byte --out d_jsonl --input docs.jsonl --text-field body
[[ $(shards d_jsonl) == "$want" ]] || fail ".jsonl --text-field body gave other shards"
zstd -q -c docs.jsonl >docs.jsonl.zst
run_ok "$CR" prepare --tokenizer byte --out d_jsonl2 --input docs.jsonl.zst --text-field body
[[ $(shards d_jsonl2) == "$want" ]] || fail ".jsonl.zst gave other shards"

# Bad input: one line naming the file (and line).
printf '{"text": "ok"}\n[1, 2]\n' >notobj.jsonl
expect_error 'notobj\.jsonl:2' 'JSON object' -- "$CR" prepare --input notobj.jsonl --out bad
printf '{"text": "ok"}\n{"text": \n' >broken.jsonl
expect_error 'broken\.jsonl:2' 'not valid JSON' -- "$CR" prepare --input broken.jsonl --out bad
printf '{"text": 5}\n' >num.jsonl
expect_error 'num\.jsonl:1' '"text"' 'string' -- "$CR" prepare --input num.jsonl --out bad
echo "not gzip at all" >fake.txt.gz
expect_error 'fake\.txt\.gz' 'gzip' -- "$CR" prepare --input fake.txt.gz --out bad
zstd -q -c plain/a.txt | head -c 500 >cut.txt.zst
expect_error 'cut\.txt\.zst' 'truncated zstd' -- "$CR" prepare --input cut.txt.zst --out bad
echo "plain" >fake.txt.zst
expect_error 'fake\.txt\.zst' 'zstd' -- "$CR" prepare --input fake.txt.zst --out bad
expect_error '--format pairs' 'jsonl' -- "$CR" prepare --input plain/a.txt --format pairs --out bad
expect_error '--name .*train' -- "$CR" prepare --input plain/a.txt --name my_train --out bad
expect_error '--tokenizer sentencepiece' '--vocab-size' -- "$CR" prepare --input plain/a.txt --tokenizer sentencepiece --out bad
[[ ! -e bad ]] || fail "a failed prepare left --out"
note "plain, .gz, .zst, multi-member, .jsonl(.zst) agree: $want"
