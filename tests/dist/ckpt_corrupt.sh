#!/usr/bin/env bash
# Corruption. Each damage is detected with a message naming the file, and nothing previously
# committed is lost:
#   - 100 random single-bit flips over the shards and the manifest of a checkpoint: `ckpt verify`
#     fails naming the flipped file, every time;
#   - a flipped bit in a shard, and in a manifest: training falls back to the checkpoint before,
#     leaves the damaged one and the older ones on disk, and matches an uninterrupted run;
#   - a truncated shard and a missing shard: verify names the file, training falls back;
#   - a manifest from another model configuration: training refuses with one error line and
#     touches nothing; another model's manifest over a checkpoint of this one is reported;
#   - disk full during a save (a small tmpfs): the save is abandoned with a warning, the run
#     finishes, what was committed verifies and is where a restart resumes.
# Layout tp=1 dp=2 (two shard files per checkpoint; a resume spreads the verification over the
# ranks), except for the one-error-line checks (one process, no mpirun).
# Usage: ckpt_corrupt.sh CHAINRULE SRC_DIR
set -euo pipefail
source "$(dirname "$0")/ckpt_lib.sh"
ckpt_init "$1" "$2"
unset CR_TEST_CKPT_KILL
SEED=${CR_TEST_SEED:-20240611}
note "random seed $SEED (set CR_TEST_SEED to change)"
COMMON=(--set train.max_steps=40 --set checkpoint.every=10)
S10=step_00000010 S20=step_00000020 S30=step_00000030

# tree_sum DIR: one checksum over every name and file content under DIR.
tree_sum() {
  (cd "$1" && find . | LC_ALL=C sort && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) |
    sha256sum | cut -d' ' -f1
}
# flip_bit FILE BYTE BIT: flips one bit in place.
flip_bit() {
  "$PY" - "$@" <<'PYEOF'
import sys
path, byte, bit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "r+b") as f:
    f.seek(byte)
    b = f.read(1)[0]
    f.seek(byte)
    f.write(bytes([b ^ (1 << bit)]))
PYEOF
}
# log_has LOG WHAT REGEX: LOG matches REGEX (grep -E), or fail showing LOG.
log_has() {
  grep -Eq -- "$3" "$1" || { cat "$1"; fail "$2: the log does not match /$3/"; }
}

# ---- the runs everything is compared against -------------------------------------------------
# ref: 40 uninterrupted steps. ck: the same run stopped after step 30 (same LR schedule), so
# step 10, 20 and 30 are committed.
train_layout 1 2 ref.log "${COMMON[@]}" --set run.dir=ref --set checkpoint.dir=ck_ref ||
  { cat ref.log; fail "the reference run failed"; }
train_layout 1 2 main.log "${COMMON[@]}" --set train.stop_after_step=30 --set run.dir=main \
  --set checkpoint.dir=ck || { cat main.log; fail "the run stopped after step 30 failed"; }
[[ $(ls ck | tr '\n' ' ') == "$S10 $S20 $S30 " ]] ||
  fail "expected checkpoints of steps 10, 20, 30 in ck: $(ls ck)"
same_losses ref main 1 30 "the run stopped after step 30"
out=$("$BIN" ckpt verify ck 2>&1) || fail "the fresh checkpoints do not verify:
$out"
note "reference run (40 steps) and a run stopped after step 30: checkpoints 10, 20, 30 sound"

# ---- 100 single-bit flips: `ckpt verify` names the file every time ---------------------------
"$PY" - "$BIN" "ck/$S30" flips "$SEED" <<'PYEOF' || fail "bit flips: see above"
import collections, filecmp, os, random, shutil, subprocess, sys
binary, src, scratch, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
r = random.Random(seed)
shutil.copytree(src, scratch)
files = sorted(os.listdir(scratch))
shards = [f for f in files if f.startswith("shard-")]
assert files == ["manifest.pb"] + shards and shards, files
size = {f: os.path.getsize(os.path.join(scratch, f)) for f in files}
# The manifest: one bit of each header field (magic, version, CRC, length), 30 anywhere; the
# other 66 spread evenly over the shards, uniformly over each file's bits.
picks = [("manifest.pb", r.randrange(a * 8, b * 8)) for a, b in ((0, 8), (8, 12), (12, 16), (16, 24))]
picks += [("manifest.pb", r.randrange(size["manifest.pb"] * 8)) for _ in range(30)]
for i in range(100 - len(picks)):
    f = shards[i % len(shards)]
    picks.append((f, r.randrange(size[f] * 8)))
assert len(picks) == 100

def flip(f, bit):
    with open(os.path.join(scratch, f), "r+b") as h:
        h.seek(bit // 8)
        b = h.read(1)[0]
        h.seek(bit // 8)
        h.write(bytes([b ^ (1 << (bit % 8))]))

bad = []
kinds = collections.Counter()
for f, bit in picks:
    flip(f, bit)
    p = subprocess.run([binary, "ckpt", "verify", scratch], capture_output=True, text=True)
    flip(f, bit)
    out = p.stdout + p.stderr
    lines = [l for l in out.splitlines() if "DAMAGED" in l]
    named = "%s: DAMAGED: %s:" % (scratch, os.path.join(scratch, f))
    if p.returncode != 1 or not lines or any(not l.startswith(named) for l in lines):
        bad.append("%s bit %d (byte %d): exit %d, output:\n%s" % (f, bit, bit // 8, p.returncode, out))
    else:
        what = lines[0][len(named):].split()
        kinds[(f, " ".join(w for w in what[:3] if not w[0].isdigit()) if f == "manifest.pb" else "CRC32C")] += 1
if bad:
    print("bit flips not reported as damage of the flipped file (%d of 100):" % len(bad))
    print("\n".join(bad[:5]))
    sys.exit(1)
p = subprocess.run([binary, "ckpt", "verify", scratch], capture_output=True, text=True)
if p.returncode != 0 or any(not filecmp.cmp(os.path.join(src, f), os.path.join(scratch, f), shallow=False) for f in files):
    sys.exit("the scratch copy is not back to the original after the flips: " + p.stdout)
print("-- 100 bit flips, each reported naming its file: " +
      ", ".join("%s %s: %d" % (f, k, n) for (f, k), n in sorted(kinds.items())))
PYEOF

# ---- one flipped bit: training falls back and matches the uninterrupted run -----------------
# fallback_case NAME FILE BYTE: flips bit 3 of BYTE of FILE in step 30 of a copy of ck. Resuming
# (stopping after step 25) falls back to step 20 and leaves step 10, 20 and the damaged 30
# untouched; resuming again (to step 40) skips 30 again and resumes at 25. Steps 21..40 equal
# the reference's; then every checkpoint verifies (step 30 was re-saved, equal to ref's).
fallback_case() {
  local name=$1 file=$2 byte=$3 ck="ck_$1" run="fb_$1"
  cp -a ck "$ck"
  flip_bit "$ck/$S30/$file" "$byte" 3
  local s10 s20 s30
  s10=$(tree_sum "$ck/$S10") s20=$(tree_sum "$ck/$S20") s30=$(tree_sum "$ck/$S30")
  local args=("${COMMON[@]}" --set checkpoint.keep_last=0 --set run.dir="$run" --set checkpoint.dir="$ck")
  train_layout 1 2 "$run.1.log" "${args[@]}" --set train.stop_after_step=25 ||
    { cat "$run.1.log"; fail "$name: the resume failed"; }
  log_has "$run.1.log" "$name" "warning: checkpoint $ck/$S30 is damaged.*$ck/$S30/$file"
  log_has "$run.1.log" "$name" "resumed at step 20:"
  [[ $(tree_sum "$ck/$S10") == "$s10" && $(tree_sum "$ck/$S20") == "$s20" ]] ||
    fail "$name: the resume changed step 10 or 20"
  [[ $(tree_sum "$ck/$S30") == "$s30" ]] || fail "$name: the resume changed the damaged step 30"
  [[ -f $ck/step_00000025/manifest.pb ]] || fail "$name: no step 25 saved: $(ls "$ck")"
  train_layout 1 2 "$run.2.log" "${args[@]}" || { cat "$run.2.log"; fail "$name: the second resume failed"; }
  log_has "$run.2.log" "$name" "warning: checkpoint $ck/$S30 is damaged.*$ck/$S30/$file"
  log_has "$run.2.log" "$name" "resumed at step 25:"
  same_losses ref "$run" 21 40 "$name: resumed past a damaged checkpoint"
  cmp -s ref/model.safetensors "$run/model.safetensors" || fail "$name: final weights differ from the reference"
  [[ $(tree_sum "$ck/$S10") == "$s10" && $(tree_sum "$ck/$S20") == "$s20" ]] ||
    fail "$name: the second resume changed step 10 or 20"
  local f
  for f in ck_ref/$S30/shard-*.bin; do
    cmp -s "$f" "$ck/$S30/${f##*/}" || fail "$name: the re-saved step 30 differs from the reference's (${f##*/})"
  done
  out=$("$BIN" ckpt verify "$ck" 2>&1) || fail "$name: not every checkpoint verifies after the resume:
$out"
  grep -q "^5 of 5 checkpoints sound" <<<"$out" || fail "$name: expected checkpoints 10, 20, 25, 30, 40:
$out"
  note "$name: fell back to step 20 (step 10, 20 and the damaged 30 kept), then past it to 25; steps 21..40 and weights bit-identical"
}
fallback_case shard_flip shard-r00001.bin 50000
fallback_case manifest_flip manifest.pb 1000

# ---- keep_last after falling back past a damaged checkpoint ----------------------------------
# Pruning keeps the checkpoint just saved (and the ones before it); the damaged newer one is
# neither counted nor deleted.
cp -a ck ck_keep
flip_bit ck_keep/$S30/shard-r00001.bin 50000 3
train_layout 1 2 keep.log "${COMMON[@]}" --set train.stop_after_step=25 --set checkpoint.keep_last=1 \
  --set run.dir=keep --set checkpoint.dir=ck_keep || { cat keep.log; fail "keep_last: the resume failed"; }
[[ -f ck_keep/step_00000025/manifest.pb ]] || fail "keep_last=1 deleted the checkpoint it had just saved: $(ls ck_keep)"
[[ -d ck_keep/$S30 ]] || fail "keep_last=1 deleted the damaged newer checkpoint"
[[ ! -d ck_keep/$S20 && ! -d ck_keep/$S10 ]] || fail "keep_last=1 kept older checkpoints: $(ls ck_keep)"
note "keep_last=1 after falling back past damaged step 30: keeps step 25 (new) and 30 (damaged, untouched)"

# ---- truncated and missing shards ----------------------------------------------------------
# damage_case NAME FILE WORD CMD...: CMD damages FILE of step 30 in a copy of ck; verify names
# the file and WORD; training falls back to step 20 and leaves every checkpoint as it was.
damage_case() {
  local name=$1 file=$2 word=$3 ck="ck_$1" run="run_$1"
  shift 3
  cp -a ck "$ck"
  (cd "$ck/$S30" && "$@")
  local before rc=0
  before=$(tree_sum "$ck")
  out=$("$BIN" ckpt verify "$ck/$S30" 2>&1) || rc=$?
  [[ $rc -eq 1 ]] || fail "$name: ckpt verify exit $rc, expected 1:
$out"
  grep -q "^$ck/$S30: DAMAGED: $ck/$S30/$file: .*$word" <<<"$out" ||
    fail "$name: ckpt verify does not name $file as $word:
$out"
  rc=0
  out=$("$BIN" ckpt verify "$ck" 2>&1) || rc=$?
  [[ $rc -eq 1 ]] && grep -q "^2 of 3 checkpoints sound" <<<"$out" ||
    fail "$name: ckpt verify of the whole dir (exit $rc):
$out"
  train_layout 1 2 "$run.log" "${COMMON[@]}" --set train.stop_after_step=21 --set checkpoint.keep_last=0 \
    --set run.dir="$run" --set checkpoint.dir="$ck" || { cat "$run.log"; fail "$name: the resume failed"; }
  log_has "$run.log" "$name" "warning: checkpoint $ck/$S30 is damaged: $ck/$S30/$file: .*$word"
  log_has "$run.log" "$name" "falling back"
  log_has "$run.log" "$name" "resumed at step 20:"
  same_losses ref "$run" 21 21 "$name: resumed past a damaged checkpoint"
  rm -r "$ck/step_00000021"
  [[ $(tree_sum "$ck") == "$before" ]] || fail "$name: the resume changed the checkpoints: $(ls -R "$ck")"
  note "$name: verify names $file ($word); training fell back to step 20, every checkpoint kept"
}
damage_case truncated shard-r00000.bin truncated truncate -s -100 shard-r00000.bin
damage_case missing shard-r00001.bin "missing shard file" rm shard-r00001.bin

# ---- a checkpoint of another model ----------------------------------------------------------
"$BIN" train "$CKPT_CFG" --set model.n_embd=64 --set train.max_steps=10 --set checkpoint.every=10 \
  --set run.dir=other --set checkpoint.dir=ck_other >other.log 2>&1 || { cat other.log; fail "the other model's run failed"; }
before=$(tree_sum ck_other)
expect_error "saved for another model" "ck_other/$S10/manifest\.pb" "64 wide" -- \
  "$BIN" train "$CKPT_CFG" "${COMMON[@]}" --set run.dir=wrong --set checkpoint.dir=ck_other
rc=0
"$BIN" train "$CKPT_CFG" "${COMMON[@]}" --set run.dir=wrong --set checkpoint.dir=ck_other >/dev/null 2>&1 || rc=$?
[[ $rc -eq 2 ]] || fail "training on another model's checkpoint.dir: exit $rc, expected 2"
[[ $(tree_sum ck_other) == "$before" ]] || fail "training on another model's checkpoint.dir changed it"
note "another model's checkpoint.dir: refused (exit 2, one line naming its manifest), left untouched"

# The other model's manifest copied over step 30 of this one: it is intact (its CRC matches), so
# verify reports what the shards contradict: shard-r00000.bin has the wrong size (the other
# model's tensors are bigger). Training stops at it as at any checkpoint of another model (one
# error line naming the manifest) rather than falling back, and changes nothing.
cp -a ck ck_foreign
cp "ck_other/$S10/manifest.pb" "ck_foreign/$S30/manifest.pb"
before=$(tree_sum ck_foreign)
rc=0
out=$("$BIN" ckpt verify ck_foreign 2>&1) || rc=$?
[[ $rc -eq 1 ]] || fail "another model's manifest over step 30: ckpt verify exit $rc, expected 1:
$out"
grep -q "^ck_foreign/$S30: DAMAGED: ck_foreign/$S30/shard-r00000.bin: .*the manifest expects" <<<"$out" &&
  grep -q "^ck_foreign/$S20: ok" <<<"$out" && grep -q "^ck_foreign/$S10: ok" <<<"$out" ||
  fail "another model's manifest over step 30: expected step 30 damaged (shard-r00000.bin's size), 10 and 20 ok:
$out"
expect_error "saved for another model" "ck_foreign/$S30/manifest\.pb" -- \
  "$BIN" train "$CKPT_CFG" "${COMMON[@]}" --set run.dir=foreign --set checkpoint.dir=ck_foreign
[[ $(tree_sum ck_foreign) == "$before" ]] || fail "training on a foreign manifest changed the checkpoints"
note "another model's manifest over step 30: verify reports shard-r00000.bin's size; training refuses naming the manifest"

# ---- disk full during a save --------------------------------------------------------------
# A tmpfs that holds two checkpoints and a quarter of a third (tmpfs counts 4 KB pages; directories
# cost none). Saves 30 and 40 run out of space: abandoned with a warning, the run finishes.
kb=$("$PY" -c '
import os, sys
d = sys.argv[1]
print(2 * sum(-(-os.path.getsize(os.path.join(d, f)) // 4096) * 4 for f in os.listdir(d)) * 9 // 8)' "ck/$S10")
mkdir full
if ! mount -t tmpfs -o size="${kb}k" tmpfs full 2>mount.err; then
  echo "SKIP disk-full: cannot mount tmpfs ($(cat mount.err))"
else
  if [[ -n ${CR_KEEP_TMP:-} ]]; then
    trap 'umount -l "$T/full" || true; echo "kept $T"' EXIT
  else
    trap 'umount -l "$T/full" || true; rm -rf "$T"' EXIT
  fi
  args=("${COMMON[@]}" --set checkpoint.keep_last=0 --set checkpoint.dir=full/ck)
  rc=0
  train_layout 1 2 full.log "${args[@]}" --set run.dir=full_run || rc=$?
  [[ $rc -eq 0 ]] || { cat full.log; fail "disk full: the run failed (exit $rc) instead of finishing"; }
  log_has full.log "disk full" "No space left on device"
  log_has full.log "disk full" "checkpoint step 30 abandoned"
  log_has full.log "disk full" "checkpoint step 40 abandoned"
  log_has full.log "disk full" "the final checkpoint could not be saved; the latest is step 20"
  [[ $(ls full/ck | tr '\n' ' ') == "$S10 $S20 " ]] ||
    fail "disk full (tmpfs of ${kb} KB): expected exactly steps 10 and 20 committed: $(ls -l full/ck)"
  no_temporaries full/ck
  out=$("$BIN" ckpt verify full/ck 2>&1) || fail "disk full: the committed checkpoints do not verify:
$out"
  same_losses ref full_run 1 40 "disk full: failed saves changed the training"
  train_layout 1 2 full_resume.log "${args[@]}" --set run.dir=full_resume ||
    { cat full_resume.log; fail "disk full: the restart failed"; }
  log_has full_resume.log "disk full" "resumed at step 20:"
  same_losses ref full_resume 21 40 "disk full: the restart"
  no_temporaries full/ck
  note "disk full (tmpfs of ${kb} KB): saves 30 and 40 abandoned (No space left on device), run finished, steps 10 and 20 verify, restart resumed at 20"
fi
echo "ckpt_corrupt: ok"
