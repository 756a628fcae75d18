#!/usr/bin/env bash
# Start-of-run checks (issue 14 part 6): a run.dir or checkpoint.dir that exists but cannot take
# files (a file in the way, a read-only directory) fails at start with one line, before any step
# (it used to train to the end with every save failing, and exit 0); train.warmup_steps >
# train.max_steps warns with the numbers.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cli_init "$@"

prepare_tiny_data data
TRAIN=("$CR" train "$TINY" --set train.max_steps=4 --set run.eval_every=0)

# A file in the way.
echo "not a directory" >afile
expect_error "checkpoint\.dir 'afile' exists and is not a directory" \
  -- "${TRAIN[@]}" --set checkpoint.dir=afile --set run.dir=run1
expect_error "run\.dir 'afile/run'" -- "${TRAIN[@]}" --set run.dir=afile/run
[[ ! -e run1/metrics.jsonl ]] || fail "training started despite the bad checkpoint.dir"

# An existing directory that refuses new files to everyone, root included.
expect_error "checkpoint\.dir '/proc/self' is not writable" \
  -- "${TRAIN[@]}" --set checkpoint.dir=/proc/self --set run.dir=run2
[[ ! -e run2/metrics.jsonl ]] || fail "training started despite the read-only checkpoint.dir"

# A read-only mount (what a user meets): a private mount namespace where the system allows one,
# else a mode-555 directory when not root (permission bits do not stop root).
mkdir ro
if unshare -m true 2>/dev/null && unshare -m mount -t tmpfs -o ro tmpfs ro 2>/dev/null; then
  expect_error "checkpoint\.dir 'ro' is not writable" 'Read-only file system' \
    -- unshare -m bash -c 'mount -t tmpfs -o ro tmpfs ro && exec "$@"' _ \
    "${TRAIN[@]}" --set checkpoint.dir=ro --set run.dir=run3
  expect_error "run\.dir 'ro' is not writable" \
    -- unshare -m bash -c 'mount -t tmpfs -o ro tmpfs ro && exec "$@"' _ "${TRAIN[@]}" --set run.dir=ro
elif [[ $(id -u) != 0 ]]; then
  chmod 555 ro
  expect_error "checkpoint\.dir 'ro' is not writable" \
    -- "${TRAIN[@]}" --set checkpoint.dir=ro --set run.dir=run3
  chmod 755 ro
else
  note "no mount namespace and running as root: the read-only mount case is skipped"
fi

# A writable checkpoint.dir: the check leaves nothing behind but the run's own files.
run_ok "${TRAIN[@]}" --set checkpoint.dir=ckpt --set run.dir=run4
[[ -z $(find ckpt run4 -name '.chainrule-write-probe*') ]] || fail "a write probe was left behind"

# Warmup longer than the run: a warning with the numbers in the run-start lines (stdout, as an
# allowed setting); the run succeeds. warmup == max_steps reaches the peak: no warning.
run_ok "${TRAIN[@]}" --set train.warmup_steps=50 --set run.dir=run5
warning=$(grep 'warning: train\.warmup_steps = 50 exceeds train\.max_steps = 4\b.*train\.lr = 0\.01\b.*0\.0008' \
  "$T/.run_ok.out") || fail "no warmup warning with the numbers: $(head -n 8 "$T/.run_ok.out")"
note "$warning"
run_ok "${TRAIN[@]}" --set train.warmup_steps=4 --set run.dir=run6
! grep -q warmup "$T/.run_ok.out" || fail "warned although the peak is reached at the last step"
note "output dirs and warnings: all cases pass"
