#!/usr/bin/env bash
# A rank that hangs (the test-only fault hook stops rank 1 before its 5th collective) must make
# every rank exit non-zero within parallel.timeout_s + 10 s, with a message naming the collective
# and one `desync:` line (rank 0, from the flight records) naming rank 1 as the one it waited on.
set -euo pipefail
BIN=$1 SRC=$2
source "$(dirname "$0")/lib.sh"
dist_init "$BIN" "$SRC" 2000
TIMEOUT_S=3
start=$(date +%s)
set +e
CR_TEST_HANG_RANK=1 CR_TEST_HANG_AT=5 timeout 60 mpirun -np 2 --bind-to none \
  -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS -x CR_TEST_HANG_RANK -x CR_TEST_HANG_AT \
  "$BIN" train "$SRC/tests/dist/dist.yaml" --set parallel.tensor=2 --set parallel.timeout_s=$TIMEOUT_S \
  --set "run.dir=$PWD/run" \
  >out.log 2>&1
rc=$?
set -e
elapsed=$(( $(date +%s) - start ))
cat out.log | grep -v '^\s*$' | tail -15
[[ $rc -ne 0 ]] || fail "the job exited 0 although a rank hung"
[[ $rc -ne 124 ]] || fail "the job hung: killed by the test's own 60 s timeout"
(( elapsed <= TIMEOUT_S + 10 )) || fail "the job took ${elapsed}s to end (timeout ${TIMEOUT_S}s + 10 s)"
grep -E "collective #5 all_reduce\(sum\) \([0-9]+ bytes\) on group tp\[0,1\] did not complete within parallel.timeout_s" out.log \
  || fail "no message naming the collective"
[[ $(grep -c '^desync:' out.log) -eq 1 ]] &&
  grep -Eq "^desync: rank 1 completed collective #4 \(tp\[0,1\].*never started #5 \(tp\[0,1\]" out.log ||
  fail "no single desync line naming rank 1 and collective #5 on tp[0,1]"
pgrep -f -- "run.dir=$PWD/run" && fail "ranks left behind"  # this job's ranks only
note "hung rank: job ended in ${elapsed}s with exit $rc"
