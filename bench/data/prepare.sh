#!/usr/bin/env bash
# Benchmark of `chainrule prepare` at scale (issue 14, "Scale"): a generated multilingual-ish
# text corpus (bench/data/gen_corpus.cpp; 2 GB by default, one file, so one 2 GB document that
# prepare must cut into pieces) is prepared with a byte-level BPE tokenizer.json (trained here
# with Hugging Face `tokenizers` on a 16 MB sample, GPT-2's pre-tokenizer, 16k vocabulary).
# Reports prepare's peak RSS (/usr/bin/time -v), wall time, MB/s and tokens/s, and, in the same
# run, on the same machine and the same number of threads, Hugging Face tokenizers'
# encode_batch throughput on a 64 MB sample of the corpus (and prepare's on that sample), with
# the ratio. Not part of ctest: it takes minutes.
#
#   bash bench/data/prepare.sh BUILD_DIR [MB] [THREADS] [WORKDIR]   (MB: corpus size, 2000)
# BUILD_DIR holds bin/chainrule; THREADS defaults to the cores; WORKDIR (default
# /tmp/cr_prepare_bench, ~2.5x MB of disk) is kept for reruns (the corpus is reused).
set -euo pipefail
BUILD=$(cd "$1" && pwd)
MB=${2:-2000}
THREADS=${3:-$(nproc)}
WORK=${4:-/tmp/cr_prepare_bench}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
CR=$BUILD/bin/chainrule
[[ -x $CR ]] || { echo "no $CR (cmake --build $BUILD --target chainrule)" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1; }
mkdir -p "$WORK"
cd "$WORK"

VENV=$BUILD/venv
bash "$SRC/tests/reference/venv.sh" "$VENV" >/dev/null
PY=$VENV/bin/python

bytes=$((MB * 1000 * 1000))
if [[ ! -f corpus.txt || $(stat -c %s corpus.txt) -ne $bytes ]]; then
  g++ -O2 -std=c++17 -o gen_corpus "$SRC/bench/data/gen_corpus.cpp"
  echo "generating a $MB MB corpus ..."
  ./gen_corpus "$bytes" 1 >corpus.txt
fi
head -c 16000000 corpus.txt >train_sample.txt
# The comparison sample: 64 MB from the middle of the corpus, cut at line ends.
dd if=corpus.txt iflag=skip_bytes,count_bytes skip=$((bytes / 2)) status=none \
  count=$((bytes / 2 < 64000000 ? bytes / 2 : 64000000)) | sed '1d;$d' >sample.txt

"$PY" - <<'EOF'
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=16384, special_tokens=["<|endoftext|>"],
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                              show_progress=False)
tok.train(["train_sample.txt"], trainer)
tok.save("tokenizer.json")
EOF

measure() {  # measure OUT INPUT: prepare under /usr/bin/time -v; prints "wall_s rss_kb tokens cpu_s"
  rm -rf "$1"
  /usr/bin/time -v "$CR" prepare --input "$2" --tokenizer hf:tokenizer.json --out "$1" \
    --threads "$THREADS" >"$1.log" 2>"$1.time"
  local wall rss tokens
  wall=$(grep 'Elapsed (wall clock)' "$1.time" | awk '{print $NF}' |
    awk -F: '{ if (NF == 3) print $1 * 3600 + $2 * 60 + $3; else print $1 * 60 + $2 }')
  rss=$(grep 'Maximum resident set size' "$1.time" | awk '{print $NF}')
  cpu=$(grep -E '(User|System) time \(seconds\)' "$1.time" | awk '{s += $NF} END {print s}')
  tokens=$("$PY" -c "import json; d = json.load(open('$1/dataset.json')); print(d['train']['tokens'] + d['val']['tokens'])")
  echo "$wall $rss $tokens $cpu"
}

echo "prepare (hf byte-level BPE, $THREADS threads) on the $MB MB corpus ..."
read -r big_s big_rss big_tok big_cpu < <(measure big corpus.txt)
read -r smp_s smp_rss smp_tok smp_cpu < <(measure small sample.txt)
sample_bytes=$(stat -c %s sample.txt)

# Hugging Face tokenizers on the same sample: encode_batch over documents of ~4 KB (whole
# lines), its Rayon pool held to the same thread count.
read -r hf_s hf_tok hf_cpu < <(RAYON_NUM_THREADS=$THREADS TOKENIZERS_PARALLELISM=true "$PY" - <<'EOF'
import time
from tokenizers import Tokenizer
tok = Tokenizer.from_file("tokenizer.json")
docs, cur, size = [], [], 0
for line in open("sample.txt", encoding="utf-8", newline=""):
    cur.append(line)
    size += len(line)
    if size >= 4096:
        docs.append("".join(cur)); cur, size = [], 0
if cur:
    docs.append("".join(cur))
t, c = time.perf_counter(), time.process_time()
enc = tok.encode_batch(docs, add_special_tokens=False)
s, cpu = time.perf_counter() - t, time.process_time() - c
print(s, sum(len(e.ids) for e in enc), cpu)
EOF
)

"$PY" - "$bytes" "$big_s" "$big_rss" "$big_tok" "$big_cpu" "$sample_bytes" "$smp_s" "$smp_tok" \
  "$smp_cpu" "$hf_s" "$hf_tok" "$hf_cpu" "$THREADS" <<'EOF'
import sys
a = sys.argv[1:]
b, bs, rss, bt, bc, sb, ss, st, sc, hs, ht, hc = [float(x) for x in a[:12]]
th = a[12]
print()
print("| run | input | wall s | CPU s | peak RSS | MB/s | tokens/s | MB per CPU-s |")
print("|---|---|---|---|---|---|---|---|")
print("| chainrule prepare | %.0f MB corpus (1 file) | %.1f | %.1f | %.0f MB | %.1f | %.2fM | %.1f |"
      % (b / 1e6, bs, bc, rss / 1024, b / 1e6 / bs, bt / bs / 1e6, b / 1e6 / bc))
print("| chainrule prepare | %.0f MB sample | %.1f | %.1f | | %.1f | %.2fM | %.1f |"
      % (sb / 1e6, ss, sc, sb / 1e6 / ss, st / ss / 1e6, sb / 1e6 / sc))
print("| HF tokenizers encode_batch | %.0f MB sample | %.1f | %.1f | | %.1f | %.2fM | %.1f |"
      % (sb / 1e6, hs, hc, sb / 1e6 / hs, ht / hs / 1e6, sb / 1e6 / hc))
print()
print("threads: %s; prepare / HF encode_batch on the sample: %.2fx by wall time, %.2fx by CPU "
      "time (prepare's figure includes reading, the EOT, the split and writing shards; HF's "
      "only encoding strings already in memory)" % (th, hs / ss, hc / sc))
print("tokens: prepare %d on the sample, HF %d (HF encodes 4 KB documents, prepare one whole "
      "document; + 1 EOT)" % (st, ht))
EOF
