#!/usr/bin/env bash
# Document masks, prefix-LM and the loss mask on the GPU: prompt->completion pairs (a loss mask)
# trained 20 steps with data.document_mask and model.prefix_lm, in fp32 on the GPU (our masked
# attention kernels: cuDNN takes no key ranges) and on the CPU; every step's loss and the final
# weights must match. Then bf16 on the GPU must run and stay finite.
# Usage: masked.sh CHAINRULE SOURCE_DIR LOSS_TOL WEIGHT_TOL.  Exit 77 without a GPU.
set -euo pipefail
BIN=$1 SRC_ARG=$2 LOSS_TOL=$3 WEIGHT_TOL=$4
source "$(dirname "$0")/lib.sh"
gpu_init "$BIN" "$SRC_ARG" 4000
"$PY" "$SRC/tests/cli/make_pairs.py" pairs.jsonl 1500 7
"$BIN" prepare --input pairs.jsonl --format pairs --prompt-field prompt --completion-field completion \
  --tokenizer char --out pairs >/dev/null
cfg=$SRC/tests/dist/dist.yaml
masks=(--set data.dir=pairs --set data.document_mask=true --set model.prefix_lm=true)
"$BIN" train "$cfg" "${masks[@]}" --set run.dir=cpu --set train.device=cpu >cpu.log 2>&1 \
  || { cat cpu.log; fail "the CPU run failed"; }
"$BIN" train "$cfg" "${masks[@]}" --set run.dir=gpu --set train.device=cuda --set train.dtype=fp32 \
  >gpu.log 2>&1 || { cat gpu.log; fail "the GPU run failed"; }
status=0
"$PY" "$GAPS" cpu gpu "$LOSS_TOL" "$WEIGHT_TOL" masked.fp32 || status=1
"$BIN" train "$cfg" "${masks[@]}" --set run.dir=bf16 --set train.device=cuda --set train.dtype=bf16 \
  >bf16.log 2>&1 || { cat bf16.log; fail "the bf16 GPU run failed"; }
grep -q "trained 20 steps" bf16.log || { cat bf16.log; fail "the bf16 run did not finish"; }
[[ $status -eq 0 ]] || fail "the masked GPU run does not match the CPU run"
echo "masked: the GPU matches the CPU with document masks, prefix-LM and a loss mask"
