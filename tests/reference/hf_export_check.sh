#!/usr/bin/env bash
# What `chainrule train` exports is what Hugging Face transformers computes: tiny runs of each
# model family are trained, then hf_interchange.py export-check loads each run dir with
# AutoModelForCausalLM and compares its mean cross-entropy over the exact windows `chainrule
# eval` scores with chainrule's own val_loss (1e-5 relative), on the prepared val split and on
# a second data dir with two val shards (two ragged tails).
#
# Usage: hf_export_check.sh CHAINRULE_BINARY SOURCE_DIR VENV_PYTHON
#   VENV_PYTHON: the python of the venv made by tests/reference/venv.sh.
# Every run is checked even when an earlier one fails; the exit status is 1 if any failed.
set -euo pipefail
source "$(dirname "$0")/../cli/lib.sh"
[[ $# -eq 3 ]] || fail "usage: $0 CHAINRULE_BINARY SOURCE_DIR VENV_PYTHON"
VPY=$3
[[ -x $VPY ]] || fail "no venv python at $VPY (bash tests/reference/venv.sh DIR)"
cli_init "$1" "$2"
HF=$SRC/tests/reference/hf_interchange.py
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

prepare_tiny_data data
# data2: the prepared val shard plus a second one of 101 tokens (ids < 20 < the char vocabulary).
mkdir data2
cp data/*val*.bin data2/
write_shard data2/extra_val_000001.bin --n 101 --period 20

failed=()
# check NAME MODEL_TYPE [--set KEY=VALUE ...]: train run_NAME, then export-check it on both dirs.
check() {
  local name=$1 type=$2
  shift 2
  note "$name: chainrule train $TINY --set train.max_steps=20 $*"
  local rc=0
  "$CR" train "$TINY" --set run.dir="run_$name" --set train.max_steps=20 --set run.eval_every=0 \
    "$@" >"train_$name.out" 2>"train_$name.err" || rc=$?
  if [[ $rc -ne 0 || -s train_$name.err ]]; then
    echo "FAIL $name: chainrule train exited $rc: $(cat "train_$name.err")"
    failed+=("$name")
    return 0
  fi
  local d
  for d in data data2; do
    if ! "$VPY" "$HF" export-check --chainrule "$CR" --run "run_$name" --data "$d" --model-type "$type"; then
      echo "FAIL $name on $d"
      failed+=("$name/$d")
    fi
  done
}

check gpt2 gpt2
# GPT-2 with the non-default fields its HF config can carry: n_inner, layer_norm_epsilon, an
# untied lm_head.
check gpt2_untied gpt2 --set model.tie_embeddings=false --set model.ffn_hidden=96 \
  --set model.norm_eps=1e-3
# Llama: grouped-query attention (4 heads, 2 KV heads), untied head, SwiGLU of width 96.
check llama llama --set model.family=llama --set model.n_head=4 --set model.n_kv_head=2 \
  --set model.ffn_hidden=96
# Llama with multi-query attention, a tied head, attention biases, another RoPE base and epsilon.
check llama_tied_bias llama --set model.family=llama --set model.n_kv_head=1 \
  --set model.tie_embeddings=true --set model.bias=true --set model.rope_theta=500000 \
  --set model.norm_eps=1e-6

if [[ ${#failed[@]} -gt 0 ]]; then
  fail "${#failed[@]} check(s) failed: ${failed[*]}"
fi
note "all runs agree with transformers"
