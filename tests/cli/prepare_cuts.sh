#!/usr/bin/env bash
# A large document is encoded in pieces (on all cores), cut where the tokens cannot change
# (core/data/text_source.cpp, safe_cut). The test prepares one ~200 KB multilingual document
# (runs of spaces and newlines, "\r\n", tabs, ".\n", digits, CJK lines without spaces, emoji)
# with --piece-bytes 512 (over a thousand cuts) and whole (--piece-bytes 2^30), and compares the
# shards byte for byte: byte and char tokenizers, and byte-level BPE tokenizer.json files with
# GPT-2's pre-tokenizer (ByteLevel use_regex) and Llama 3's (Split + ignore_merges), with
# merges learnt on the text so that many pre-tokens merge, and GPT-2's with add_prefix_space
# (only cuts before a space are allowed then).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

"$PY" - <<'EOF'
import collections, json, random, re
r = random.Random(7)
words = ["the", "cat", "sat", "on", "mat", "héllo", "naïve", "Straße", "日本語", "中文", "😀", "🎉x",
         "123", "4567", "3.14", "it's", "we'll", "don't", "(paren)", "a,b", "--", "...", "über", "ÆØÅ"]
seps = [" ", " ", " ", "  ", "   ", "\n", "\n", "\n\n", " \n", "\n ", "\t", "\r\n", ".\n", ",\n",
        "!\n\n", "\u00a0", "\u3000"]
out = []
size = 0
while size < 200_000:
    if r.random() < 0.05:  # a CJK line: only a newline cut fits inside such runs
        s = "".join(r.choice("日本語中文漢字かなカナ한국어") for _ in range(r.randint(20, 60))) + "\n"
    else:
        s = r.choice(words) + r.choice(seps)
    out.append(s)
    size += len(s.encode())
text = "".join(out)
open("doc.txt", "w", encoding="utf-8", newline="").write(text)

# GPT-2's byte -> unicode alphabet.
bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
cs = bs[:]
n = 0
for b in range(256):
    if b not in bs:
        bs.append(b)
        cs.append(256 + n)
        n += 1
sym = {b: chr(c) for b, c in zip(bs, cs)}
vocab = {sym[b]: b for b in range(256)}
# A few hundred merges learnt greedily on rough pre-tokens of the text (any valid merges do).
pre = collections.Counter(re.findall(r" ?\w+| ?[^\w\s]+|\s+", text[:50000]))
seqs = {tuple(sym[b] for b in w.encode()): c for w, c in pre.items() if len(w.encode()) <= 12}
merges = []
for _ in range(200):
    pairs = collections.Counter()
    for s, c in seqs.items():
        for a, b in zip(s, s[1:]):
            pairs[a, b] += c
    if not pairs:
        break
    (a, b), _ = pairs.most_common(1)[0]
    merges.append(a + " " + b)
    vocab[a + b] = len(vocab)
    new = {}
    for s, c in seqs.items():
        t, i = [], 0
        while i < len(s):
            if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                t.append(a + b); i += 2
            else:
                t.append(s[i]); i += 1
        new[tuple(t)] = new.get(tuple(t), 0) + c
    seqs = new
eot = {"id": len(vocab), "content": "<|endoftext|>", "single_word": False, "lstrip": False,
       "rstrip": False, "normalized": False, "special": True}
def tokenizer(pre_tokenizer, ignore_merges):
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [eot],
            "normalizer": None, "pre_tokenizer": pre_tokenizer, "post_processor": None,
            "decoder": {"type": "ByteLevel"},
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "ignore_merges": ignore_merges, "vocab": vocab, "merges": merges}}
bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
json.dump(tokenizer(bl, False), open("gpt2.json", "w"))
json.dump(tokenizer(dict(bl, add_prefix_space=True), False), open("gpt2_prefix.json", "w"))
llama3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
seq = {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": llama3}, "behavior": "Isolated", "invert": False},
    dict(bl, use_regex=False)]}
json.dump(tokenizer(seq, True), open("llama3.json", "w"))
print("-- doc.txt: %d bytes, %d merges" % (size, len(merges)))
EOF

# add_prefix_space allows only cuts before a space: the CJK lines need larger pieces.
for tk in byte char hf:gpt2.json hf:llama3.json hf:gpt2_prefix.json; do
  name=${tk//[:.]/_}
  piece=512
  [[ $tk != *prefix* ]] || piece=4096
  run_ok "$CR" prepare --input doc.txt --tokenizer "$tk" --out "${name}_whole" --piece-bytes 1073741824
  run_ok "$CR" prepare --input doc.txt --tokenizer "$tk" --out "${name}_cut" --piece-bytes $piece
  ! grep -q 'no safe cut' "$T/.run_ok.out" || fail "$tk: hard cuts: $(cat "$T/.run_ok.out")"
  for f in "${name}_whole"/*.bin; do
    cmp -s "$f" "${name}_cut/$(basename "$f")" ||
      fail "$tk: $(basename "$f") differs when the document is encoded in $piece-byte pieces"
  done
  note "$tk: pieces of $piece bytes give the tokens of the whole ($(grep -o '[0-9]* train tokens' "$T/.run_ok.out"))"
done
