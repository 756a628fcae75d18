#!/usr/bin/env bash
# Data-parallel benchmarks on this machine, in one run (not a test: run by hand).
#   1. Overlap: a 12-layer x 512-wide GPT-2 at dp 2, parallel.overlap false then true. Reports,
#      per step (median over the steps after the first), the exposed communication time (how
#      long the step waited for the gradient reduction after backward: `comm_exposed_ms` in
#      metrics.jsonl) and the step time, and the ratios on/off.
#   2. Memory: the same model at dp 4, parallel.zero 0 then 1: each rank's peak RSS, and the drop
#      against the expectation, AdamW's bytes x (1 - 1/dp) = 8 B x parameters x 3/4.
# Usage: bench/dist/dp.sh CHAINRULE [STEPS]     (from the repository root; STEPS default 6)
set -euo pipefail
BIN=$(readlink -f "$1") STEPS=${2:-6}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
PY=/usr/bin/python3
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

"$PY" - <<'EOF' >corpus.txt
import random
random.seed(0)
words = "the of and to in is was for on that with as by at from his her it an".split()
for _ in range(20000):
    print(" ".join(random.choice(words) for _ in range(14)))
EOF
"$BIN" prepare --input corpus.txt --tokenizer char --out data >/dev/null
cat >model.yaml <<EOF
model: {n_layer: 12, n_head: 8, n_embd: 512, block_size: 128, vocab_size: 0}
train: {global_batch: 4, micro_batch: 2, max_steps: $STEPS, lr: 1.0e-4, warmup_steps: 1, seed: 1}
data: {dir: data}
run: {dir: run, log_every: 1, eval_every: 0, final_eval_tokens: 128}
parallel: {tensor: 1, timeout_s: 600, bucket_mb: 25}
EOF

# train NAME NP [--set K=V ...]: prints nothing; NAME/metrics.jsonl and NAME.rss (KB per rank)
train() {
  local name=$1 np=$2
  shift 2
  mpirun -np "$np" --bind-to none -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS \
    bash -c 'exec /usr/bin/time -f "rss_kb %M" -o "$0.rss.$OMPI_COMM_WORLD_RANK" "$@"' "$name" \
    "$BIN" train model.yaml --set run.dir="$name" "$@" >"$name.log" 2>&1 ||
    { tail -20 "$name.log"; echo "$name failed" >&2; exit 1; }
}
median() {  # median of a metrics field over steps 2..
  "$PY" - "$1/metrics.jsonl" "$2" <<'EOF'
import json, statistics, sys
v = [json.loads(l)[sys.argv[2]] for l in open(sys.argv[1]) if '"train"' in l]
print(f"{statistics.median(v[1:]):.1f}")
EOF
}

echo "== overlap: 12 x 512 GPT-2, dp 2, $STEPS steps, $(nproc --all) cores"
for ov in false true; do train "ov_$ov" 2 --set parallel.overlap=$ov; done
printf "%-14s %22s %14s\n" overlap "exposed comm ms/step" "ms/step"
for ov in false true; do
  printf "%-14s %22s %14s\n" "$ov" "$(median ov_$ov comm_exposed_ms)" "$(median ov_$ov ms_per_step)"
done
"$PY" -c "print(f'ratio on/off: exposed comm {$(median ov_true comm_exposed_ms)/$(median ov_false comm_exposed_ms):.2f}, step time {$(median ov_true ms_per_step)/$(median ov_false ms_per_step):.2f}')"
grep -h "gradient reduction over" ov_true.log | head -1 | sed 's/^.*gradient/gradient/'

echo "== memory: the same model at dp 4, 2 steps, zero 0 vs 1 (peak RSS per rank)"
for z in 0 1; do train "zero_$z" 4 --set parallel.zero=$z --set train.max_steps=2 --set train.micro_batch=1; done
params=$(sed -n 's/.*model: .*: \([0-9.]*[kMB]*\) parameters.*/\1/p' zero_0.log | head -1)
"$PY" - "$params" <<'EOF'
import glob, re, sys
def rss(name):
    return [int(re.search(r"rss_kb (\d+)", open(f).read()).group(1)) / 1024
            for f in sorted(glob.glob(f"{name}.rss.*"))]
z0, z1 = rss("zero_0"), rss("zero_1")
p = sys.argv[1]
n = float(p[:-1]) * {"k": 1e3, "M": 1e6, "B": 1e9}[p[-1]] if p[-1] in "kMB" else float(p)
expect = 8 * n * 3 / 4 / 2**20
print(f"{'rank':<6}{'zero 0 MB':>12}{'zero 1 MB':>12}{'drop MB':>10}")
for r, (a, b) in enumerate(zip(z0, z1)):
    print(f"{r:<6}{a:>12.0f}{b:>12.0f}{a - b:>10.0f}")
drop = sum(a - b for a, b in zip(z0, z1)) / len(z0)
print(f"mean drop {drop:.0f} MB; expected AdamW x 3/4 = 8 B x {n / 1e6:.2f}M x 3/4 = {expect:.0f} MB "
      f"(ratio {drop / expect:.2f})")
EOF
