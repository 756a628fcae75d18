#!/usr/bin/env bash
# prepare's shard format and progress:
#  - a char corpus of 74,885 distinct code points (more than uint16 holds) makes version-2
#    (uint32) shards whose ids are the code points' ranks (the old prepare failed internally);
#  - on a terminal a progress bar (bytes, tokens, tokens/s) is drawn on stderr; every run ends
#    with a throughput line (MB/s, tokens/s) on stdout.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

"$PY" - <<'EOF'
import random
cps = list(range(0x4E00, 0xA000)) + list(range(0xAC00, 0xD7A4)) + list(range(0x20000, 0x2A6E0))
random.Random(3).shuffle(cps)
with open("wide.txt", "w", encoding="utf-8") as f:
    for i in range(0, len(cps), 60):
        f.write("".join(map(chr, cps[i:i + 60])) + "\n")
EOF
run_ok "$CR" prepare --input wide.txt --tokenizer char --out wide --shard-tokens 40000
"$PY" - wide.txt wide <<'EOF'
import glob, json, math, os, struct, sys
text = open(sys.argv[1], encoding="utf-8").read()
d = sys.argv[2]
info = json.load(open(os.path.join(d, "dataset.json")))
chars = sorted(set(text))
rank = {c: i for i, c in enumerate(chars)}
if info["tokenizer"]["vocab_size"] != len(chars) + 1 or info["shard_version"] != 2:
    sys.exit("FAIL: vocab %s, shard_version %s" % (info["tokenizer"]["vocab_size"], info["shard_version"]))
stream = [len(chars)] + [rank[c] for c in text]  # EOT first
want = {"train": [], "val": []}
for b in range((len(stream) + 1023) // 1024):
    split = "val" if math.floor((b + 1) * 0.1) > math.floor(b * 0.1) else "train"
    want[split] += stream[b * 1024:(b + 1) * 1024]
for split in want:
    got = []
    for p in sorted(glob.glob(os.path.join(d, "data_%s_*.bin" % split))):
        data = open(p, "rb").read()
        magic, version, n = struct.unpack("<3i", data[:12])
        if (magic, version) != (20240520, 2) or len(data) != 1024 + 4 * n:
            sys.exit("FAIL: %s: magic %d version %d, %d bytes for %d tokens" % (p, magic, version, len(data), n))
        got += struct.unpack("<%dI" % n, data[1024:])
    if got != want[split]:
        sys.exit("FAIL: %s tokens are not the code points' ranks" % split)
print("-- %d distinct code points -> version-2 shards, vocab %d" % (len(chars), len(chars) + 1))
EOF

# Progress: a bar on a terminal's stderr (script(1) gives the command one), and the final line.
if command -v script >/dev/null; then
  make_text small.txt 3000
  script -qec "'$CR' prepare --input small.txt --tokenizer byte --out p1" /dev/null >tty.out
  grep -q $'\r' tty.out || fail "no bar redrawn in place on a terminal: $(cat -A tty.out | head -5)"
  grep -Eq 'prepare: .*MB .*tokens .*MB/s .*tokens/s' tty.out ||
    fail "the bar lacks bytes, tokens or tokens/s: $(cat -A tty.out | head -5)"
  note "terminal bar: $(tr '\r' '\n' <tty.out | grep -m1 'prepare:')"
fi
run_ok "$CR" prepare --input wide.txt --tokenizer byte --out p2
grep -Eq '^throughput: [0-9.]+ MB/s of text, [0-9.]+[kMG]? tokens/s' "$T/.run_ok.out" ||
  fail "no throughput line: $(cat "$T/.run_ok.out")"
