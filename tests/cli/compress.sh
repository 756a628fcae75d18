#!/usr/bin/env bash
# `chainrule compress` / `decompress` round-trip any bytes with a trained model: the held-out val
# text, an empty file, one byte, random bytes, characters outside the char vocabulary (plus NUL
# and invalid UTF-8), and many chunks in batches smaller than their number. Decompression at
# another OpenMP thread count still matches (the header's count is used). Damage, another model
# or an existing output give one-line errors and leave no output file.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

prepare_tiny_data data
run_ok "$CR" train "$TINY" --set run.dir=run --set train.max_steps=40
"$PY" "$SRC/bench/compress/shard_text.py" data val val.txt

: >empty.bin
printf 'x' >one.bin
head -c 3000 /dev/urandom >random.bin
# The tiny corpus has lowercase ASCII only: these are outside the char vocabulary.
printf 'the cat sat on the MAT. 日本語 ☃ caf\xc3\xa9 \x00 \xff\xfe bad utf-8 \xe6\x97 the end.\n' >oov.bin
cat val.txt oov.bin val.txt >mixed.bin

roundtrip() {  # NAME FILE [compress flags...]
  local name=$1 f=$2
  shift 2
  run_ok "$CR" compress run "$f" "$name.crz" "$@"
  OMP_NUM_THREADS=1 "$CR" decompress run "$name.crz" "$name.out" 2>"$name.err" ||
    fail "decompress $name: $(cat "$name.err")"
  cmp -s "$f" "$name.out" || fail "$name: the round trip changed the bytes"
  note "$name: $(stat -c %s "$f") -> $(stat -c %s "$name.crz") bytes"
}
# One thread each (2 threads wait on each other more than they work at this size), except
# "chunks": coded with 2, decoded from OMP_NUM_THREADS=1, which must switch to the recorded 2.
roundtrip val val.txt --threads 1
roundtrip empty empty.bin --threads 1
roundtrip one one.bin --threads 1
roundtrip random random.bin --threads 1
roundtrip oov oov.bin --threads 1
# The default corpus's val split (its first 16 KB; the whole split is bench/compress/run.sh's):
# mostly characters the tiny corpus lacks, so escapes all through.
run_ok "$CR" prepare --tokenizer char --out fortunes
"$PY" "$SRC/bench/compress/shard_text.py" fortunes val fortunes_val.txt
head -c 16384 fortunes_val.txt >fval.txt
roundtrip fortunes_val fval.txt --chunk-bytes 4096 --threads 1
roundtrip chunks mixed.bin --chunk-bytes 300 --batch 4 --threads 2  # 4 chunks a batch, a short last batch
# Pipes: stdin to stdout both ways (reports then go to stderr, never into the data).
"$CR" compress run - - --threads 1 <mixed.bin >pipe.crz 2>pipe.err || fail "compress - -: $(cat pipe.err)"
"$CR" decompress run - - <pipe.crz >pipe.out 2>pipe.err || fail "decompress - -: $(cat pipe.err)"
cmp -s mixed.bin pipe.out || fail "the round trip through pipes changed the bytes"

# The model compresses its own kind of text: well under 8 bits a byte (random bytes are not).
"$PY" - val.txt val.crz random.bin random.crz <<'EOF'
import os, sys
v = 8 * os.path.getsize(sys.argv[2]) / os.path.getsize(sys.argv[1])
r = 8 * os.path.getsize(sys.argv[4]) / os.path.getsize(sys.argv[3])
print(f"-- val text {v:.3f} bits/byte, random bytes {r:.3f}")
if not v < 3.0: sys.exit(f"FAIL: val text costs {v:.3f} bits/byte")
if not 8.0 < r < 9.5: sys.exit(f"FAIL: random bytes cost {r:.3f} bits/byte")
EOF

# ---- errors: one line each, no output left behind ------------------------------------------------
expect_error 'exists' 'force' -- "$CR" compress run val.txt val.crz
# --force overwrites regular files only: a symlink (or device, FIFO) would be replaced, not written.
echo keep >target.txt
ln -s target.txt link.crz
expect_error 'link.crz: exists and is not a regular file' -- "$CR" compress run val.txt link.crz --force
[[ -L link.crz && $(cat target.txt) == keep ]] || fail "--force replaced a symlink or its target"
expect_error 'data: not a regular file' -- "$CR" compress run data x.crz
expect_error 'not a file made by .chainrule compress' -- "$CR" decompress run val.txt x.out
[[ ! -e x.out ]] || fail "a failed decompress left x.out"
flip() {  # FILE OFFSET (negative: from the end)
  "$PY" -c 'import sys; p, i = sys.argv[1], int(sys.argv[2]); b = bytearray(open(p, "rb").read()); b[i] ^= 0x04; open(p, "wb").write(b)' "$1" "$2"
}
cp val.crz flipped.crz
flip flipped.crz -40
expect_error 'flipped.crz' 'chunk 0 of 1' 'CRC32C' -- "$CR" decompress run flipped.crz x.out
[[ ! -e x.out ]] || fail "a failed decompress left x.out"
cp val.crz header.crz
flip header.crz 90  # in the chunk size
expect_error 'damaged header' -- "$CR" decompress run header.crz x.out
head -c 300 val.crz >cut.crz
expect_error 'cut.crz' 'truncated' -- "$CR" decompress run cut.crz x.out
[[ ! -e x.out ]] || fail "a failed decompress left x.out"
# Another model (same shape, another seed): refused, naming both hashes.
run_ok "$CR" train "$TINY" --set run.dir=run2 --set train.max_steps=5 --set train.seed=2
expect_error 'compressed with model sha256 [0-9a-f]{16}, but run2 is sha256 [0-9a-f]{16}' -- \
  "$CR" decompress run2 val.crz x.out
[[ ! -e x.out ]] || fail "a failed decompress left x.out"
note "ok"
