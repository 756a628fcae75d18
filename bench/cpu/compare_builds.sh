#!/usr/bin/env bash
# bench/cpu/compare_builds.sh: end-to-end training speed of two builds of chainrule, measured in
# one run, as a ratio. Used to check that a change to the model code does not slow it down.
#
#   bash bench/cpu/compare_builds.sh BASE_BUILD NEW_BUILD [ROUNDS]
#   e.g. git worktree add /tmp/base HEAD~1 && cmake -S /tmp/base -B /tmp/base/build \
#        -DBUILD_TESTING=OFF && cmake --build /tmp/base/build --target train_bench
#        bash bench/cpu/compare_builds.sh /tmp/base/build build
#
# Each round runs BASE then NEW (train_bench, GPT-2 124M, B=8, T=256, 3 timed steps after one
# warm-up, all cores), alternating so that drift in the machine's speed hits both alike. Prints
# each run's tokens/s, the median of each build and NEW/BASE. CONFIG, B, T, STEPS override.
# Not a test: nothing fails on a slow result.
set -euo pipefail
BASE=$1 NEW=$2 ROUNDS=${3:-3}
CONFIG=${CONFIG:-gpt2-124m} B=${B:-8} T=${T:-256} STEPS=${STEPS:-3}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
declare -A all=([base]="" [new]="")
for ((r = 1; r <= ROUNDS; r++)); do
  for which in base new; do
    dir=$BASE; [[ $which == new ]] && dir=$NEW
    line=$("$dir/bin/train_bench" --config "$CONFIG" -B "$B" -T "$T" --steps "$STEPS" 2>/dev/null | tail -n 1)
    tps=$(/usr/bin/python3 -c 'import json,sys; print(round(json.loads(sys.argv[1])["tokens_per_s"], 1))' "$line")
    echo "round $r $which: $tps tok/s  $line"
    all[$which]+="$tps "
  done
done
/usr/bin/python3 - "${all[base]}" "${all[new]}" <<'PY'
import statistics, sys
base = [float(x) for x in sys.argv[1].split()]
new = [float(x) for x in sys.argv[2].split()]
mb, mn = statistics.median(base), statistics.median(new)
print(f"median tok/s: base {mb:.1f}, new {mn:.1f}; new/base = {mn / mb:.3f}")
PY
