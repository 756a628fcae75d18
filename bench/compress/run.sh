#!/usr/bin/env bash
# Benchmark of `chainrule compress` (issue 15): the default model (configs/default.yaml, a
# character-level GPT on Debian's fortunes) is trained, then its held-out val text (the val
# split's characters, never trained on, end-of-text tokens left out) is compressed by chainrule,
# xz -9e, zstd -19 and gzip -9 in the same run. Reports bytes, bits/byte and throughput (MB/s of
# original bytes, compress and decompress) of each, `chainrule eval`'s bits/byte on the same
# split, and `chainrule score`'s with the compressor's contexts (--stride block_size/2); checks
# every round trip, that chainrule beats xz -9e, and that it is within 1% of eval's bits/byte.
# Not part of ctest: training takes minutes.
#
#   bash bench/compress/run.sh BUILD_DIR [WORKDIR] [MAX_STEPS]
# WORKDIR (default /tmp/cr_compress_bench) keeps the data and the trained model for reruns;
# MAX_STEPS (default: the config's 1200) shortens training for a quick look.
set -euo pipefail
BUILD=$(cd "$1" && pwd)
WORK=${2:-/tmp/cr_compress_bench}
STEPS=${3:-}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
CR=$BUILD/bin/chainrule
[[ -x $CR ]] || { echo "no $CR (cmake --build $BUILD --target chainrule)" >&2; exit 1; }
for t in xz zstd gzip; do command -v $t >/dev/null || { echo "needs $t (bash deploy/install_deps.sh)" >&2; exit 1; }; done
mkdir -p "$WORK"
cd "$WORK"

if [[ ! -f data/dataset.json ]]; then
  "$CR" prepare --tokenizer char --out data >/dev/null
fi
if [[ ! -f run/model.safetensors ]]; then
  echo "training configs/default.yaml${STEPS:+ for $STEPS steps} (minutes)..."
  "$CR" train "$SRC/configs/default.yaml" --set data.dir=data --set run.dir=run \
    ${STEPS:+--set train.max_steps=$STEPS} >train.log 2>&1 || { tail train.log; exit 1; }
fi
python3 "$SRC/bench/compress/shard_text.py" data val val.txt
N=$(stat -c %s val.txt)
echo "held-out text: val.txt, $N bytes; threads: ${OMP_NUM_THREADS:-$(nproc)}"

now() { date +%s.%N; }
rows=()
# name, compress command (IN -> OUT), decompress command (IN -> OUT)
bench() {
  local name=$1 c=$2 d=$3
  rm -f out.z out.txt
  local t0 t1 t2
  t0=$(now); eval "$c" ; t1=$(now); eval "$d"; t2=$(now)
  cmp -s val.txt out.txt || { echo "FAIL: $name does not round-trip" >&2; exit 1; }
  local z; z=$(stat -c %s out.z)
  rows+=("$(python3 -c "import sys; n,z,a,b,c=map(float,sys.argv[1:]); print(f'{z:.0f} {8*z/n:.4f} {n/1e6/(b-a):.3f} {n/1e6/(c-b):.3f}')" "$N" "$z" "$t0" "$t1" "$t2") $name")
}
bench "gzip -9"   "gzip -9 -c val.txt > out.z"     "gzip -dc out.z > out.txt"
bench "zstd -19"  "zstd -q -19 -c val.txt > out.z" "zstd -q -dc out.z > out.txt"
bench "xz -9e"    "xz -9e -c val.txt > out.z"      "xz -dc out.z > out.txt"
bench "chainrule" "$CR compress run val.txt out.z 2>cz.log" "$CR decompress run out.z out.txt 2>dz.log"

eval_bpb=$("$CR" eval run --json | python3 -c "import json,sys; print(json.load(sys.stdin)['val_bits_per_byte'])")
T=$(python3 -c "import json; c = json.load(open('run/config.json')); print(c.get('n_positions') or c['max_position_embeddings'])")
score_bpb=$("$CR" score run --tokens data/data_val_000000.bin --stride $((T / 2)) --json 2>/dev/null |
  tail -1 | python3 -c "import json,sys; print(json.load(sys.stdin)['bits_per_byte'])" || echo nan)

echo
echo "| compressor | bytes | bits/byte | compress MB/s | decompress MB/s |"
echo "|---|---|---|---|---|"
for r in "${rows[@]}"; do
  read -r z bpb cs ds name <<<"$r"
  echo "| $name | $z | $bpb | $cs | $ds |"
done
echo
echo "chainrule eval bits/byte (windows of $T, as training): $eval_bpb"
echo "chainrule score bits/byte (stride $((T / 2)): the compressor's contexts): $score_bpb"
python3 - "${rows[2]}" "${rows[3]}" "$eval_bpb" <<'PY'
import sys
xz = float(sys.argv[1].split()[1]); cr = float(sys.argv[2].split()[1]); ev = float(sys.argv[3])
print(f"chainrule / xz -9e: {cr / xz:.3f}; chainrule vs eval: {100 * (cr - ev) / ev:+.2f}%")
ok = cr < xz and abs(cr - ev) / ev < 0.01
print("PASS" if ok else "FAIL: chainrule must beat xz -9e and be within 1% of eval's bits/byte")
sys.exit(0 if ok else 1)
PY
