#!/usr/bin/env bash
# prepare: the byte and char tokenizers both make data_train_*.bin, data_val_*.bin and
# dataset.json from a small text (ASCII and multi-byte UTF-8), with consistent token and byte
# counts (one document: the EOT, then the text); training on the multi-byte data reports
# bits/byte = bits/token / (bytes per token); a --val-fraction outside (0, 1) is rejected with
# one line. (prepare_*.sh test formats, shards, masks and the safety of --out.)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

make_text ascii.txt 3000
# Multi-byte UTF-8 (2-, 3- and 4-byte code points), about 40 KB.
"$PY" - <<'EOF'
import random
r = random.Random(1)
words = ["héllo", "wörld", "naïve", "✓", "日本", "€5", "𝄞", "plain", "text"]
with open("utf8.txt", "w", encoding="utf-8") as f:
    for _ in range(2000):
        f.write(" ".join(r.choice(words) for _ in range(3)) + "\n")
EOF

check_data_dir() {  # check_data_dir DIR TOKENIZER INPUT
  local d=$1
  [[ -f $d/dataset.json ]] || fail "$d: no dataset.json"
  compgen -G "$d/data_train_*.bin" >/dev/null || fail "$d: no data_train_*.bin ($(ls "$d" | tr '\n' ' '))"
  compgen -G "$d/data_val_*.bin" >/dev/null || fail "$d: no data_val_*.bin ($(ls "$d" | tr '\n' ' '))"
  "$PY" - "$@" <<'EOF'
import glob, json, os, struct, sys
d, tokenizer, src = sys.argv[1:4]
ndocs = int(sys.argv[4]) if len(sys.argv) > 4 else 1
info = json.load(open(os.path.join(d, "dataset.json")))
text = open(src, encoding="utf-8", newline="").read()
def fail(msg):
    sys.exit("FAIL: %s: %s\ndataset.json: %s" % (d, msg, json.dumps(info)[:400]))
tok = info.get("tokenizer", {})
if tok.get("type") != tokenizer:
    fail("tokenizer type is %r, expected %r" % (tok.get("type"), tokenizer))
want_vocab = 257 if tokenizer == "byte" else len(set(text)) + 1  # + the EOT
if tok.get("eot") != want_vocab - 1:
    fail("eot %r, expected %d" % (tok.get("eot"), want_vocab - 1))
if tok.get("vocab_size") != want_vocab:
    fail("vocab_size %r, expected %d" % (tok.get("vocab_size"), want_vocab))
counts = {}
for split in ("train", "val"):
    n = 0
    for path in sorted(glob.glob(os.path.join(d, "data_" + split + "_*.bin"))):
        data = open(path, "rb").read()
        magic, version, ntok = struct.unpack("<3i", data[:12])
        if magic != 20240520 or version != 1:
            fail("%s: header magic %d version %d" % (path, magic, version))
        if len(data) != 1024 + 2 * ntok:
            fail("%s: %d bytes for %d tokens" % (path, len(data), ntok))
        toks = struct.unpack("<%dH" % ntok, data[1024:])
        if toks and max(toks) >= want_vocab:
            fail("%s: token %d >= vocab %d" % (path, max(toks), want_vocab))
        n += ntok
    if info[split]["tokens"] != n:
        fail("%s tokens: dataset.json says %d, shards hold %d" % (split, info[split]["tokens"], n))
    counts[split] = n
total_bytes = len(text.encode("utf-8"))
total_tokens = (total_bytes if tokenizer == "byte" else len(text)) + ndocs
if counts["train"] + counts["val"] != total_tokens:
    fail("train + val = %d tokens, the text has %d" % (counts["train"] + counts["val"], total_tokens))
if info["train"]["bytes"] + info["val"]["bytes"] != total_bytes:
    fail("train + val bytes = %d, the text has %d" % (info["train"]["bytes"] + info["val"]["bytes"], total_bytes))
if not 0.05 < counts["val"] / total_tokens < 0.2:
    fail("val share %.3f is far from --val-fraction 0.1" % (counts["val"] / total_tokens))
print("-- %s: %s tokenizer, vocab %d, %d train + %d val tokens, %d bytes"
      % (d, tokenizer, want_vocab, counts["train"], counts["val"], total_bytes))
EOF
}

for tk in byte char; do
  for src in ascii utf8; do
    run_ok "$CR" prepare --input "$src.txt" --tokenizer "$tk" --out "d_${tk}_$src" --val-fraction 0.1
    check_data_dir "d_${tk}_$src" "$tk" "$src.txt"
  done
done

# prepare reads a directory of inputs, too (two files: two documents), and replaces the shards
# of the dataset it wrote before in --out (here 7 of 1000 tokens) by the new ones.
mkdir texts
head -n 1500 ascii.txt >texts/a.txt
tail -n 1500 ascii.txt >texts/b.txt
run_ok "$CR" prepare --input ascii.txt --tokenizer char --out d_char_ascii --shard-tokens 10000
[[ -e d_char_ascii/data_train_000005.bin ]] || fail "no 6th shard of 10000 tokens: $(ls d_char_ascii)"
run_ok "$CR" prepare --input texts --tokenizer char --out d_char_ascii
[[ ! -e d_char_ascii/data_train_000001.bin ]] || fail "prepare left a stale shard in --out"
check_data_dir d_char_ascii char ascii.txt 2

# bits/byte on multi-byte text: the char tokenizer's tokens cover several bytes each.
run_ok "$CR" train "$TINY" --set data.dir=d_char_utf8 --set train.max_steps=2 --set run.eval_every=0
run_ok "$CR" eval run --json
"$PY" - "$T/.run_ok.out" d_char_utf8/dataset.json <<'EOF'
import json, sys
e = json.loads(open(sys.argv[1]).read())
ds = json.load(open(sys.argv[2]))
bpt = ds["val"]["bytes"] / ds["val"]["tokens"]
if not bpt > 1.2:
    sys.exit("FAIL: expected multi-byte tokens, got %.3f bytes/token" % bpt)
want = e["val_bits_per_token"] / bpt
if not abs(e["val_bits_per_byte"] - want) <= 1e-12 * want:
    sys.exit("FAIL: val_bits_per_byte %r, expected %r (%.3f bytes/token)" % (e["val_bits_per_byte"], want, bpt))
print("-- utf8 char data: %.3f bytes/token, %.4f bits/token, %.4f bits/byte"
      % (bpt, e["val_bits_per_token"], e["val_bits_per_byte"]))
EOF

# A --val-fraction outside (0, 1) is one line naming the option and the value.
expect_error '--val-fraction 0\b' '\(0, 1\)' -- "$CR" prepare --input ascii.txt --out bad --val-fraction 0
expect_error '--val-fraction 1\.5\b' '\(0, 1\)' -- "$CR" prepare --input ascii.txt --out bad --val-fraction 1.5
expect_error '--val-fraction -0\.1\b' '\(0, 1\)' -- "$CR" prepare --input ascii.txt --out bad --val-fraction -0.1
[[ ! -e bad ]] || fail "a rejected prepare created its --out dir"
# A corpus too small to split names its size, and leaves no --out behind.
printf 'ab' >tiny.txt
expect_error 'too small' -- "$CR" prepare --input tiny.txt --out bad
[[ ! -e bad ]] || fail "a failed prepare left its --out dir"
[[ -z $(compgen -G ".bad.prepare-tmp-*") ]] || fail "a failed prepare left its temp dir: $(ls -a)"

# --tokenizer sentencepiece trains a model on the corpus (SentencePiece's C++ trainer in this
# process, beside the protobuf of the checkpoint code) and encodes with it; the model travels in
# dataset.json.
"$CR" prepare --input ascii.txt --tokenizer sentencepiece --vocab-size 300 --out sp >sp.log 2>&1 \
  || { cat sp.log; fail "prepare --tokenizer sentencepiece failed"; }
"$PY" - sp/dataset.json <<'EOF'
import json, sys
t = json.load(open(sys.argv[1]))["tokenizer"]
if t["type"] != "sp" or not 256 < t.get("vocab_size", 0) <= 300:
    sys.exit("FAIL: sentencepiece dataset.json tokenizer %s" % {k: t[k] for k in t if k != "model_proto_base64"})
EOF
