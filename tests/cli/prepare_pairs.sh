#!/usr/bin/env bash
# prepare --format pairs: every .jsonl line becomes [EOT] + prompt + completion, with a loss mask
# NAME.mask beside every NAME.bin (magic 20241129, one byte a token, 1 = completion token). With
# the byte tokenizer the whole stream is known, so the test rebuilds it, applies the split rule
# (block b of 1024 tokens is val when floor((b+1)F) > floor(bF)) and compares every token and
# mask byte, across shard rollovers (--shard-tokens 5000), and dataset.json's counts.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

"$PY" "$CLI_DIR/make_pairs.py" pairs.jsonl 3000
# Non-default field names, an empty prompt, and multi-byte text.
cat >>pairs.jsonl <<'EOF'
{"prompt": "", "completion": "no prompt."}
{"prompt": "héllo 日本=", "completion": "😀."}
EOF
sed -e 's/"prompt"/"q"/; s/"completion"/"a"/' pairs.jsonl >qa.jsonl
run_ok "$CR" prepare --input qa.jsonl --format pairs --prompt-field q --completion-field a \
  --tokenizer byte --out d --shard-tokens 5000 --val-fraction 0.2

"$PY" - pairs.jsonl d 0.2 <<'EOF'
import glob, json, math, os, struct, sys
src, d, F = sys.argv[1], sys.argv[2], float(sys.argv[3])
def fail(msg):
    sys.exit("FAIL: " + msg)
toks, mask = [], []
for line in open(src, encoding="utf-8"):
    o = json.loads(line)
    p, c = o["prompt"].encode(), o["completion"].encode()
    toks += [256] + list(p) + list(c)
    mask += [0] * (1 + len(p)) + [1] * len(c)
want = {"train": ([], []), "val": ([], [])}
for b in range(0, (len(toks) + 1023) // 1024):
    split = "val" if math.floor((b + 1) * F) > math.floor(b * F) else "train"
    want[split][0].extend(toks[b * 1024:(b + 1) * 1024])
    want[split][1].extend(mask[b * 1024:(b + 1) * 1024])
info = json.load(open(os.path.join(d, "dataset.json")))
if not info.get("loss_mask") or info.get("format") != "pairs":
    fail("dataset.json: loss_mask %r format %r" % (info.get("loss_mask"), info.get("format")))
for split, (wt, wm) in want.items():
    got_t, got_m = [], []
    bins = sorted(glob.glob(os.path.join(d, "data_%s_*.bin" % split)))
    for path in bins:
        data = open(path, "rb").read()
        magic, version, n = struct.unpack("<3i", data[:12])
        if (magic, version) != (20240520, 1) or len(data) != 1024 + 2 * n:
            fail("%s: header %d %d %d, %d bytes" % (path, magic, version, n, len(data)))
        if path != bins[-1] and n != 5000:
            fail("%s: %d tokens, expected 5000 before the last shard" % (path, n))
        got_t += struct.unpack("<%dH" % n, data[1024:])
        m = open(path[:-4] + ".mask", "rb").read()
        mmagic, mversion, mn = struct.unpack("<3i", m[:12])
        if (mmagic, mversion, mn) != (20241129, 1, n) or len(m) != 1024 + n:
            fail("%s.mask: header %d %d %d, %d bytes (tokens %d)" % (path[:-4], mmagic, mversion, mn, len(m), n))
        got_m += list(m[1024:])
    if list(got_t) != wt:
        fail("%s tokens differ from [EOT] + prompt + completion per line" % split)
    if got_m != wm:
        i = next(i for i in range(min(len(got_m), len(wm))) if got_m[i] != wm[i])
        fail("%s mask differs at %d: got %s, want %s" % (split, i, got_m[i:i+20], wm[i:i+20]))
    s = info[split]
    counted = sum(wm)
    cbytes = sum(1 for t, m in zip(wt, wm) if m)  # byte tokenizer: a token is one byte
    if (s["tokens"], s["counted_tokens"], s["counted_bytes"]) != (len(wt), counted, cbytes):
        fail("dataset.json %s: %s, expected tokens %d counted %d/%d bytes"
             % (split, s, len(wt), counted, cbytes))
    if s["bytes"] != sum(1 for t in wt if t != 256):
        fail("dataset.json %s bytes %d" % (split, s["bytes"]))
    print("-- %s: %d tokens in %d shards, %d counted" % (split, len(wt), len(bins), counted))
# The mask pattern of the first pair: EOT and prompt 0, completion 1 ("abc=" -> "cba.").
first = json.loads(open(src).readline())
pat = bytes([0] * (1 + len(first["prompt"])) + [1] * len(first["completion"]))
m = open(os.path.join(d, "data_train_000000.mask"), "rb").read()[1024:1024 + len(pat)]
if m != pat:
    fail("first mask bytes %r, expected %r" % (m, pat))
files = sorted(info["files"])
if files != sorted(f for f in os.listdir(d) if f != "dataset.json"):
    fail("dataset.json files %s != the directory %s" % (files, sorted(os.listdir(d))))
EOF

# Bad pairs: a line without the completion names file:line and the flag.
printf '{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n' >bad.jsonl
expect_error 'bad\.jsonl:2' '"completion"' '--completion-field' -- \
  "$CR" prepare --input bad.jsonl --format pairs --tokenizer byte --out bad
[[ ! -e bad ]] || fail "a failed prepare left --out"
