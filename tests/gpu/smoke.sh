#!/usr/bin/env bash
# Training smoke test on a GPU: 20 steps of each family (smoke_gpt2.yaml, smoke_llama.yaml) on
# the GPU against the same config and seed on the CPU (fp32, the oracle).
#   train.dtype fp32 on the GPU: every step's loss within 1e-4 (relative) of the CPU's, and the
#                                final weights within 1e-3 of each tensor's largest entry;
#   train.dtype bf16 on the GPU: every step's loss within 2e-2 (weights reported, not checked:
#                                bf16 rounding moves Adam's small updates).
# Then checkpoints across devices (gpt2): 10 steps on the GPU (bf16) resumed to 20 on the CPU
# (fp32), and 10 on the CPU resumed to 20 on the GPU (fp32), each against the CPU run (2e-2 and
# 1e-4): a checkpoint holds the f32 masters and AdamW state whatever the device and dtype.
# Usage: smoke.sh CHAINRULE SOURCE_DIR [FAMILY...]   (default: gpt2 llama). Exit 77 without a GPU.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
gpu_init "$1" "$2" 4000
shift 2
families=(gpt2 llama)
[[ $# -eq 0 ]] || families=("$@")

status=0
for fam in "${families[@]}"; do
  cfg=$SRC/tests/gpu/smoke_$fam.yaml
  for run in cpu:fp32 cuda:fp32 cuda:bf16; do
    dev=${run%:*} dt=${run#*:} dir=${fam}_${dev}_$dt
    start=$(date +%s%N)
    "$BIN" train "$cfg" --set run.dir="$dir" --set train.device="$dev" --set train.dtype="$dt" \
      >"$dir.log" 2>&1 || { cat "$dir.log"; fail "$fam on $dev ($dt): the run failed"; }
    note "$fam $dev $dt: 20 steps in $(( ($(date +%s%N) - start) / 1000000 )) ms"
  done
  "$PY" "$GAPS" "${fam}_cpu_fp32" "${fam}_cuda_fp32" 1e-4 1e-3 "smoke.$fam.fp32" || status=1
  "$PY" "$GAPS" "${fam}_cpu_fp32" "${fam}_cuda_bf16" 2e-2 0 "smoke.$fam.bf16" || status=1
done

cfg=$SRC/tests/gpu/smoke_gpt2.yaml
for pair in cuda:bf16:cpu:fp32:2e-2 cpu:fp32:cuda:fp32:1e-4; do
  IFS=: read -r d1 t1 d2 t2 tol <<<"$pair"
  dir=resume_${d1}_${t1}_to_${d2}_${t2}
  "$BIN" train "$cfg" --set run.dir="$dir" --set checkpoint.dir="$dir/ckpt" --set train.device="$d1" \
    --set train.dtype="$t1" --set train.stop_after_step=10 >"$dir.1.log" 2>&1 \
    || { cat "$dir.1.log"; fail "$dir: steps 1-10 on $d1 failed"; }
  "$BIN" train "$cfg" --set run.dir="$dir" --set checkpoint.dir="$dir/ckpt" --set train.device="$d2" \
    --set train.dtype="$t2" >"$dir.2.log" 2>&1 || { cat "$dir.2.log"; fail "$dir: resume on $d2 failed"; }
  grep -q '"type":"resume"' "$dir/metrics.jsonl" || fail "$dir: no resume recorded"
  "$PY" "$GAPS" gpt2_cpu_fp32 "$dir" "$tol" 0 "smoke.$dir" || status=1
done
[[ $status -eq 0 ]] || fail "the GPU runs do not match the CPU runs (GAP lines above)"
echo "smoke: all families match"
