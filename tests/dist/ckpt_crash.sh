#!/usr/bin/env bash
# Crash during a save: at tp=2 dp=2 (4 ranks), SIGKILL one rank (CR_TEST_CKPT_KILL) at each stage
# of the save protocol of step 20: in the middle of its shard (ranks 1 and 0), after its shard
# (ranks 0 and 3), and -- stages only rank 0 reaches -- before the manifest, after the temporary
# manifest, before the directory rename. Each time: the job fails, step 10 is the latest
# committed checkpoint and verifies, step 20 exists only as a temporary whose contents show the
# stage; the restart (the same command, no hook) removes the temporary, resumes at step 10, and
# steps 11..40 and the final weights are bit-identical to an uninterrupted run.
# Usage: ckpt_crash.sh CHAINRULE SRC_DIR
set -euo pipefail
source "$(dirname "$0")/ckpt_lib.sh"
ckpt_init "$1" "$2"
unset CR_TEST_CKPT_KILL
COMMON=(--set train.max_steps=40 --set checkpoint.every=10)
NP=4

train_layout 2 2 base.log "${COMMON[@]}" --set run.dir=base --set checkpoint.dir=ck_base ||
  { cat base.log; fail "the uninterrupted run failed"; }
# Every rank must write a shard, or a kill at mid_shard/after_shard of some rank would not fire.
inspect=$("$BIN" ckpt inspect ck_base/step_00000020) || fail "ckpt inspect failed: $inspect"
for r in $(seq 0 $((NP - 1))); do
  f=$(printf 'shard-r%05d.bin' "$r")
  grep -q "^    $f " <<<"$inspect" ||
    fail "rank $r writes no shard at tp=2 dp=2; pick other ranks for the kill cases
$(sed -n '/files/,/tensors/p' <<<"$inspect")"
done
note "uninterrupted run: 40 steps, every rank writes a shard"

tmp=step_00000020.tmp
# case STAGE RANK CHECK: CHECK is a bash test on the temporary the killed save left ($ck/$tmp),
# proving the kill happened at that stage.
crash_case() {
  local stage=$1 rank=$2 check=$3 tag="$1@$2" ck="ck_$1_$2" run="run_$1_$2" rc=0
  CR_TEST_CKPT_KILL="$stage@$rank@20" train_layout 2 2 "$run.killed.log" "${COMMON[@]}" \
    --set run.dir="$run" --set checkpoint.dir="$ck" || rc=$?
  [[ $rc -ne 0 ]] || { cat "$run.killed.log"; fail "$tag: the job survived the kill"; }
  grep -q "killing rank $rank at checkpoint stage $stage of step 20" "$run.killed.log" ||
    { cat "$run.killed.log"; fail "$tag: the hook did not fire (exit $rc for another reason)"; }
  [[ -f $ck/step_00000010/manifest.pb ]] || fail "$tag: step 10 is not committed: $(ls "$ck")"
  [[ ! -e $ck/step_00000020 ]] || fail "$tag: step 20 was committed by a killed save: $(ls "$ck")"
  [[ -d $ck/$tmp ]] || fail "$tag: no $tmp left behind (the kill came too late?): $(ls "$ck")"
  (cd "$ck/$tmp" && eval "$check") ||
    fail "$tag: the temporary does not show a kill at $stage ($check): $(ls -l "$ck/$tmp")"
  local out
  out=$("$BIN" ckpt verify "$ck" 2>&1) || fail "$tag: ckpt verify fails on what is committed:
$out"
  # The restart: the same command without the hook.
  train_layout 2 2 "$run.log" "${COMMON[@]}" --set run.dir="$run" --set checkpoint.dir="$ck" ||
    { cat "$run.log"; fail "$tag: the restart failed"; }
  grep -q "removing .*$tmp, left by an interrupted save" "$run.log" ||
    { cat "$run.log"; fail "$tag: the restart did not remove $tmp"; }
  grep -q "resumed at step 10:" "$run.log" || { cat "$run.log"; fail "$tag: did not resume at step 10"; }
  ! grep -q "damaged" "$run.log" || { cat "$run.log"; fail "$tag: the restart found damage"; }
  no_temporaries "$ck"
  same_losses base "$run" 11 40 "$tag"
  cmp -s base/model.safetensors "$run/model.safetensors" ||
    fail "$tag: final weights differ from the uninterrupted run"
  out=$("$BIN" ckpt verify "$ck" 2>&1) || fail "$tag: ckpt verify after the restart:
$out"
  note "$tag: killed (exit $rc), step 10 intact, resumed at step 10, steps 11..40 and weights bit-identical"
}

full1=$(stat -c %s ck_base/step_00000020/shard-r00001.bin)
full0=$(stat -c %s ck_base/step_00000020/shard-r00000.bin)
crash_case mid_shard 1 "[[ -f shard-r00001.bin && \$(stat -c %s shard-r00001.bin) -lt $full1 && ! -e manifest.pb ]]"
crash_case mid_shard 0 "[[ -f shard-r00000.bin && \$(stat -c %s shard-r00000.bin) -lt $full0 && ! -e manifest.pb ]]"
crash_case after_shard 0 "[[ \$(stat -c %s shard-r00000.bin) -eq $full0 && ! -e manifest.pb ]]"
crash_case after_shard 3 "[[ -f shard-r00003.bin && ! -e manifest.pb ]]"
crash_case before_manifest 0 "[[ ! -e manifest.pb && ! -e manifest.pb.tmp ]]"
crash_case after_temp_manifest 0 "[[ -s manifest.pb.tmp && ! -e manifest.pb ]]"
crash_case before_rename 0 "[[ -s manifest.pb && ! -e manifest.pb.tmp ]]"
echo "ckpt_crash: ok"
